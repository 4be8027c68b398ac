"""Modal apps (TEI, vLLM, training); containers import only what they use, so nothing here."""
