"""Scaling out: executors (multiprocess, Celery), local S3/Redis services, one run per partition."""
