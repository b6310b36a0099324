"""Resolve a build SOURCE (local directory, alias, or Hub id) into a local model directory.

Only safetensors weights are loaded unless the user opts in to pickle-based `.bin` files, and no
model code is ever executed (`trust_remote_code` stays off).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repo_builder.errors import ModelSourceError
from model_repo_builder.models.registry import ALIASES
from model_repo_builder.tasks.base import ModelFacts, choose_task

LOGGER = logging.getLogger(__name__)

_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "2_Normalize/*"]


@dataclass(frozen=True, kw_only=True)
class ResolvedModel:
    """A model available on local disk, with what trb needs to know to build it."""

    path: Path
    origin: str
    hub_id: str | None
    task: str
    model_type: str
    config: dict[str, Any]
    facts: ModelFacts

    @property
    def default_name(self) -> str:
        """A repository name derived from where the model came from."""
        base = (self.hub_id or self.path.name).split("/")[-1]
        return "".join(c if c.isalnum() or c in "_-." else "-" for c in base.lower())


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelSourceError(f"{path} has no config.json; pass a Hugging Face model directory")
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelSourceError(
            f"{config_file} is not valid JSON ({error}); the download may be corrupt"
        ) from None
    if not isinstance(data, dict):
        raise ModelSourceError(f"{config_file} must hold a JSON object")
    return data


def check_weights(path: Path, allow_pickle: bool) -> None:
    """Refuse pickle-only checkpoints unless the user opted in; pickles can run arbitrary code."""
    if any(path.glob("*.safetensors")):
        return
    if any(path.glob("*.bin")) or any(path.glob("*.pt")):
        if allow_pickle:
            LOGGER.warning("loading pickle-based weights from %s (--allow-pickle)", path)
            return
        raise ModelSourceError(
            f"{path} only has pickle-based weights (*.bin/*.pt), which can execute code when loaded; "
            "convert them to safetensors, or pass --allow-pickle if you trust the source"
        )
    raise ModelSourceError(f"{path} has no weights (*.safetensors); pass a complete model directory")


def load_tokenizer(path: Path) -> Any:
    """The model's fast tokenizer; missing or unreadable tokenizer files are a `ModelSourceError`."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError) as error:  # transformers' ways of saying "no tokenizer"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelSourceError(
            f"{path} has no usable tokenizer ({first_line}); copy the tokenizer files (tokenizer.json, or "
            "vocab.txt / spiece.model with tokenizer_config.json) from the original model into it"
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelSourceError(f"{path} has no fast tokenizer (tokenizer.json); trb serves only those")
    return tokenizer


def _local(path: Path, origin: str, hub_id: str | None, task: str | None) -> ResolvedModel:
    config = _read_config(path)
    facts = ModelFacts.read(path, config)
    chosen = choose_task(facts, task)
    if task is not None and not chosen.detect(facts):
        LOGGER.warning("%s is built as %s because `--task` says so", path, chosen.name)
    return ResolvedModel(
        path=path.resolve(),
        origin=origin,
        hub_id=hub_id,
        task=chosen.name,
        model_type=facts.model_type,
        config=config,
        facts=facts,
    )


def _download(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download

    hint = (
        "this machine may be offline or the id may be wrong: download the model elsewhere "
        "and pass its directory instead (`trb build ./my-model` or `--model-dir ./my-model`)"
    )
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise ModelSourceError(f"cannot download {hub_id!r}: HF_HUB_OFFLINE is set; {hint}")
    try:
        return Path(snapshot_download(hub_id, allow_patterns=_HUB_PATTERNS))
    except Exception as error:  # huggingface_hub raises many unrelated types for "not reachable"
        raise ModelSourceError(
            f"cannot download {hub_id!r} from the Hugging Face Hub ({type(error).__name__}); {hint}"
        ) from None


def resolve_source(source: str, model_dir: Path | None = None, task: str | None = None) -> ResolvedModel:
    """Turn SOURCE into a local model directory and its task (`task` forces one the model fits).

    `model_dir` overrides where an alias's weights are.
    """
    alias = ALIASES.get(source.lower())
    if model_dir is not None:
        if not model_dir.is_dir():
            raise ModelSourceError(f"`--model-dir` {model_dir} is not a directory")
        return _local(
            model_dir, origin=f"local:{model_dir}", hub_id=alias.hub_id if alias else None, task=task
        )
    path = Path(source).expanduser()
    if path.is_dir():
        return _local(path, origin=f"local:{path}", hub_id=None, task=task)
    if alias is not None:
        if alias.package is not None:
            try:
                package = importlib.import_module(alias.package)
            except ImportError:
                LOGGER.info("package %s for alias %s is not installed; trying the Hub", alias.package, source)
            else:
                return _local(
                    Path(package.get_model_path()),
                    origin=f"package:{alias.package}",
                    hub_id=alias.hub_id,
                    task=task,
                )
        try:
            downloaded = _download(alias.hub_id)
        except ModelSourceError as error:
            raise ModelSourceError(f"alias {source!r} → {alias.hub_id}: {error}") from None
        return _local(downloaded, origin=f"hub:{alias.hub_id}", hub_id=alias.hub_id, task=task)
    if source.count("/") == 1 and not source.startswith((".", "/")):
        return _local(_download(source), origin=f"hub:{source}", hub_id=source, task=task)
    raise ModelSourceError(
        f"{source!r} is not a directory, a known alias ({', '.join(sorted(ALIASES))}) or a Hub id (org/name)"
    )
