"""Text-embedding model served by the Triton python backend."""
