"""The demos: ``make demo`` (local graph) and ``make demo-scale`` (S3, Redis, two workers)."""
