"""The README written into every repository: how to run it and how to call it."""

from __future__ import annotations

from typing import Any

from model_repo_builder import __version__
from model_repo_builder.runtime.tools import NGC_IMAGE
from model_repo_builder.tasks import Task

_TEMPLATE = """# {name}

Triton model repository built by trb {trb_version} from `{source}` ({precision}, {instances} instance(s),
max batch {max_batch_size}). `trb.yaml` records every option, the versions used and file hashes;
rebuild with `trb build --from trb.yaml`.

## Run

Locally (CPU, the tritonserver from the nvidia-pytriton wheel):

    trb launch {repo_dir}

In the NGC container or on Kubernetes (trb's image: the Dockerfile in the trb checkout adds the
Python packages the model imports to `{image}`):

    trb deploy docker {repo_dir}    # compose.yaml, docker-run.sh, Prometheus and Grafana config
    trb deploy k8s {repo_dir}       # KServe InferenceService (or --plain), PDB, KEDA ScaledObject

## Call
{call}"""


def render_readme(
    name: str, options: dict[str, Any], model: dict[str, Any], repo_dir: str, task: Task
) -> str:
    """Fill the README template from the build options, the built model and the task's call section."""
    return _TEMPLATE.format(
        name=name,
        repo_dir=repo_dir,
        max_batch_size=options["max_batch_size"],
        call=task.readme_call(name, options, model, repo_dir),
        trb_version=__version__,
        source=options["source"],
        precision=options["precision"],
        instances=options["instances"],
        image=NGC_IMAGE,
    )
