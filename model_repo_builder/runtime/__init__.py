"""Running Triton: binaries, the tritonserver process, health, and container commands."""
