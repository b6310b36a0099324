"""`trb deploy`: files that serve a built repository in a container or on Kubernetes.

`deploy(spec)` reads the repository (and a sweep run with `--plan`), renders every file, and writes
them atomically into the output folder (default `deploy/<name>/<platform>` in the working directory:
never inside the repository, where tritonserver would take the folder for a model). It only ever
replaces a folder an earlier `trb deploy` wrote.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from model_repo_builder import __version__
from model_repo_builder.deploy.facts import RepositoryFacts, read_repository
from model_repo_builder.deploy.notes import container_notes, kubernetes_notes
from model_repo_builder.errors import DeployError
from model_repo_builder.repository.writer import atomic_directory
from model_repo_builder.spec import DeploySpec

LOGGER = logging.getLogger(__name__)
MARKER = "trb-deploy.json"
_EXECUTABLE = ("docker-run.sh",)


@dataclass(frozen=True, kw_only=True)
class DeployResult:
    """Where the files went and what the operator should know."""

    folder: Path
    files: tuple[str, ...]
    notes: tuple[str, ...]  # decisions and caveats worth saying on the terminal


def default_output(spec: DeploySpec, facts: RepositoryFacts) -> Path:
    """deploy/<name>/<platform> in the working directory."""
    return Path("deploy") / facts.name / spec.platform


def _check_replaceable(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).is_file():
        raise DeployError(
            f"`--output` {folder} exists and was not written by `trb deploy` (no {MARKER}); "
            "choose a new or empty folder"
        )


def _render(spec: DeploySpec, facts: RepositoryFacts, folder: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    if spec.platform == "docker":
        from model_repo_builder.deploy import container

        files = container.render(spec, facts, str(folder))
        notes = container_notes(spec, facts)
        files["NOTES.md"] = notes.text
        return files, notes.highlights
    from model_repo_builder.deploy import kubernetes
    from model_repo_builder.deploy.autoscaling import IN_FLIGHT, QUEUE_DEPTH, autoscaling
    from model_repo_builder.deploy.plan import read_plan
    from model_repo_builder.deploy.sizing import resources

    plan = read_plan(spec.plan, facts) if spec.plan is not None else None
    sized = resources(facts, plan.peak_rss_bytes if plan else None, str(spec.plan or ""))
    scaling = autoscaling(
        spec, plan, metric=IN_FLIGHT if facts.generates else QUEUE_DEPTH, decode_width=facts.decode_width
    )
    files = kubernetes.render(spec, facts, sized, scaling)
    notes = kubernetes_notes(spec, facts, sized, scaling)
    files["NOTES.md"] = notes.text
    return files, notes.highlights


def deploy(spec: DeploySpec) -> DeployResult:
    """Write the deployment files for `spec.repository`; return where they are."""
    facts = read_repository(spec.repository)
    folder = spec.output if spec.output is not None else default_output(spec, facts)
    _check_replaceable(folder)
    files, highlights = _render(spec, facts, folder)
    marker = {
        "trb_version": __version__,
        "platform": spec.platform,
        "repository": str(facts.path.resolve()),
        "plan": str(spec.plan) if spec.plan else None,
        "files": sorted(files),
    }
    with atomic_directory(folder) as staging:
        for relative, content in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            if relative in _EXECUTABLE:
                path.chmod(0o755)
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    LOGGER.info("wrote %d %s files to %s", len(files), spec.platform, folder)
    return DeployResult(folder=folder, files=tuple(sorted(files)), notes=highlights)
