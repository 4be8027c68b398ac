"""Dagster asset factories, checks, run modes and CLIs over the functional core."""
