"""tritonserver's command-line flags as trb runs it, in one object for every runtime.

The local launcher, `trb launch --docker`, `trb deploy docker` and `trb deploy k8s` all render their
tritonserver command from `ServerFlags`, so a repository behaves the same wherever it is served:
every model loaded at start under explicit model control (the repository API can reload a broken
model), strict readiness, the restricted APIs behind an admin key, and latency summaries exported on
the metrics port (the p50/p99 a dashboard shows).
"""

from __future__ import annotations

from dataclasses import dataclass

ADMIN_HEADER = "trb-admin-key"
RESTRICTED_APIS = "model-repository,shared-memory,logging,trace"
# Triton 2.51 exports only cumulative counters unless told otherwise; with summaries it also exports
# nv_inference_{request,queue,compute_*}_summary_us with the quantiles 0.5 … 0.999 (verified by
# tests/integration/test_deploy_metrics.py against the real server).
METRICS_CONFIG = ("summary_latencies=true",)


@dataclass(frozen=True, kw_only=True)
class ServerFlags:
    """Everything trb passes to tritonserver; `args()` renders the flags (without the binary).

    Attributes:
        admin_key: The key the restricted APIs ask for in the `trb-admin-key` header. Renderers for
            files pass a placeholder their format expands (`${TRB_ADMIN_KEY}`, `$(TRB_ADMIN_KEY)`).
        model_repositories: The repository paths as the server sees them (one `--model-repository`
            each); none when the runtime passes its own (KServe's Triton runtime adds
            `--model-store=/mnt/models`).
        address: Interface the HTTP, gRPC and metrics endpoints bind to.
        http_port: None leaves HTTP and gRPC ports to the runtime (KServe's: 8080 and 9000).
        gpu_metrics: Whether Triton exports GPU utilisation and memory (off on CPU-only machines).
        backend_directory: Where the backends live, for the pip-installed server; None in the image.
        cache_directory: Triton's cache directory, for the pip-installed server; None in the image.
    """

    admin_key: str
    model_repositories: tuple[str, ...]
    address: str = "127.0.0.1"
    http_port: int | None = 8000
    grpc_port: int | None = 8001
    metrics_port: int = 8002
    exit_timeout_s: int = 30
    log_verbose: int = 0
    gpu_metrics: bool = False
    backend_directory: str | None = None
    cache_directory: str | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def restricted(self) -> str:
        """The value of `--http-restricted-api` and `--grpc-restricted-protocol`."""
        return f"{RESTRICTED_APIS}:{ADMIN_HEADER}={self.admin_key}"

    def args(self) -> list[str]:
        """The flags, in a stable order."""
        args: list[str] = []
        args += [f"--model-repository={repository}" for repository in self.model_repositories]
        if self.backend_directory is not None:
            args.append(f"--backend-directory={self.backend_directory}")
        if self.cache_directory is not None:
            args.append(f"--cache-directory={self.cache_directory}")
        args += [
            # Explicit control, every model loaded at start: a broken model can be reloaded through
            # the repository API, which only holders of the admin key may call.
            "--model-control-mode=explicit",
            "--load-model=*",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--http-address={self.address}",
        ]
        if self.http_port is not None:
            args.append(f"--http-port={self.http_port}")
        args.append(f"--grpc-address={self.address}")
        if self.grpc_port is not None:
            args.append(f"--grpc-port={self.grpc_port}")
        args += [
            f"--metrics-address={self.address}",
            f"--metrics-port={self.metrics_port}",
            *(f"--metrics-config={setting}" for setting in METRICS_CONFIG),
            f"--allow-gpu-metrics={'true' if self.gpu_metrics else 'false'}",
            f"--http-restricted-api={self.restricted}",
            f"--grpc-restricted-protocol={self.restricted}",
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]
        return args
