"""The response cache: entries keyed by request, their journal, scans and namespaces."""
