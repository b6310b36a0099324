"""trb: build, launch and measure NVIDIA Triton Inference Server repositories for Hugging Face models."""

__version__ = "0.1.0"
