"""The async LLM engine: request keys, plans, limits, cache, cost and the Batch API (no core)."""
