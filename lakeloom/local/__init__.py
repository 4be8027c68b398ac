"""The embedded local model servers (llama.cpp chat, MiniLM embeddings) and their CLI."""
