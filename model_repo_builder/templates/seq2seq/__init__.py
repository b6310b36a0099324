"""Text-to-text generation (T5 family) served by the Triton python backend."""
