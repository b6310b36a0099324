"""The tokenizer step of a GPU-target ensemble, served by the Triton python backend on CPU."""
