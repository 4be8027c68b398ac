"""Rate limiting: the decision core, its local and shared (Redis) stores, header learning."""
