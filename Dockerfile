# Triton 2.51 (the same version as the tritonserver in the nvidia-pytriton wheel trb runs locally),
# plus the Python packages that trb's generated python-backend models import.
# Build:  docker build -t trb-triton:24.10 .
# Run:    trb launch repos/<name> --docker    (prints the full `docker run` command)
#         trb deploy docker|k8s repos/<name>   (compose file, run script, Kubernetes manifests)
FROM nvcr.io/nvidia/tritonserver:24.10-py3

# The image's Python is 3.10 with CUDA 12.6 / cuDNN 9: onnxruntime-gpu 1.22 runs on CPU and on GPU
# (CUDAExecutionProvider) with it. numpy<2 matches what the models are tested with.
RUN python3 -m pip install --no-cache-dir \
        "numpy==1.26.4" \
        "tokenizers==0.22.2" \
        "onnxruntime-gpu==1.22.0"

USER triton-server
