"""Dagster sensors: run-status webhooks and notifications."""
