"""The functional core: specs, prompts, schemas and the pure polars column kinds (no Dagster)."""
