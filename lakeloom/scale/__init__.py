"""Scaling out: local S3/Redis services, the scale-profile demo and its helpers."""
