"""The OpenAI Batch API mode: request files, batch jobs, their Delta store and spend."""
