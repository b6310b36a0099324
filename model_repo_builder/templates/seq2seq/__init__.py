"""Text-to-text generation (T5, BART, mBART, Marian) served by the Triton python backend."""
