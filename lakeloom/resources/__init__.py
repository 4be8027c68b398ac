"""Dagster resources: ``LLMResource``, ``DuckDBCatalogResource``, ``ModalResource``."""
