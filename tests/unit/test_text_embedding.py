"""The served embedding computation (templates/embedding/text_embedding.py), imported as a real module."""

import numpy as np
import pytest
from encoder_fixtures import DIM, TOKENIZER_FILE, write_lookup_encoder
from tokenizers import Tokenizer

from model_repo_builder.templates.embedding.text_embedding import (
    EmbedderSettings,
    InvalidTextError,
    TextEmbedder,
    decode_texts,
    pool,
)

# --- decode_texts ------------------------------------------------------------------------------


def as_tensor(*items) -> np.ndarray:
    """A [batch, 1] object array, the shape Triton hands a TYPE_STRING dims [1] input to the model."""
    array = np.empty((len(items), 1), dtype=object)
    for row, item in enumerate(items):
        array[row, 0] = item
    return array


def test_decode_utf8_bytes_in_order():
    assert decode_texts(as_tensor(b"hello", "Grüße".encode(), "東京 🚀".encode())) == [
        "hello",
        "Grüße",
        "東京 🚀",
    ]


def test_str_items_pass_through_unchanged():
    assert decode_texts(as_tensor("  padded text  ", "x")) == ["  padded text  ", "x"]


def test_empty_batch_decodes_to_nothing():
    assert decode_texts(np.empty((0, 1), dtype=object)) == []


@pytest.mark.parametrize("empty", [b"", "", b"   ", " \t\n", "\u3000"])
def test_empty_or_whitespace_text_is_rejected_with_its_index(empty):
    with pytest.raises(InvalidTextError, match=r"TEXT\[1\] is empty"):
        decode_texts(as_tensor(b"fine", empty))


def test_non_utf8_bytes_are_rejected_naming_the_byte():
    with pytest.raises(InvalidTextError) as caught:
        decode_texts(as_tensor(b"ok", b"ab\xff\xfe"))
    message = str(caught.value)
    assert "TEXT[1]" in message
    assert "UTF-8" in message
    assert "byte 2" in message
    assert r"\xff" in message


@pytest.mark.parametrize("item", [3, 1.5, None])
def test_non_string_items_are_rejected(item):
    with pytest.raises(InvalidTextError, match=r"TEXT\[0\] must be a string"):
        decode_texts(as_tensor(item))


def test_invalid_text_error_is_a_value_error():
    assert issubclass(InvalidTextError, ValueError)


# --- pool --------------------------------------------------------------------------------------

# Two sentences, three token positions, two dimensions. Row 0 has two real tokens, row 1 one; the
# padding positions hold large values that must never leak into any pooling mode.
HIDDEN = np.array(
    [
        [[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]],
        [[-2.0, 6.0], [50.0, 50.0], [70.0, 70.0]],
    ],
    dtype=np.float32,
)
MASK = np.array([[1, 1, 0], [1, 0, 0]], dtype=np.int64)


def test_mean_pooling_ignores_padding():
    np.testing.assert_allclose(pool(HIDDEN, MASK, "mean", normalize=False), [[2.0, -1.0], [-2.0, 6.0]])


def test_cls_pooling_takes_the_first_token():
    np.testing.assert_allclose(pool(HIDDEN, MASK, "cls", normalize=False), [[1.0, 2.0], [-2.0, 6.0]])


def test_max_pooling_ignores_padding():
    np.testing.assert_allclose(pool(HIDDEN, MASK, "max", normalize=False), [[3.0, 2.0], [-2.0, 6.0]])


def test_mean_sqrt_len_pooling_divides_the_sum_by_sqrt_of_length():
    expected = [[4.0 / np.sqrt(2), -2.0 / np.sqrt(2)], [-2.0, 6.0]]
    np.testing.assert_allclose(pool(HIDDEN, MASK, "mean_sqrt_len", normalize=False), expected, rtol=1e-6)


@pytest.mark.parametrize("mode", ["mean", "cls", "max", "mean_sqrt_len"])
def test_normalization_gives_unit_vectors_in_the_same_direction(mode):
    raw = pool(HIDDEN, MASK, mode, normalize=False)
    unit = pool(HIDDEN, MASK, mode, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(unit * np.linalg.norm(raw, axis=1, keepdims=True), raw, rtol=1e-5)


def test_normalized_mean_by_hand():
    expected = np.array([[2.0, -1.0], [-2.0, 6.0]]) / np.array([[np.sqrt(5.0)], [np.sqrt(40.0)]])
    np.testing.assert_allclose(pool(HIDDEN, MASK, "mean", normalize=True), expected, rtol=1e-6)


def test_zero_vector_normalizes_without_nan():
    hidden = np.zeros((1, 2, 3), dtype=np.float32)
    result = pool(hidden, np.ones((1, 2), dtype=np.int64), "mean", normalize=True)
    assert np.all(np.isfinite(result))


def test_pool_returns_float32_for_float16_and_float64_input():
    for dtype in (np.float16, np.float64):
        result = pool(HIDDEN.astype(dtype), MASK, "mean", normalize=True)
        assert result.dtype == np.float32
        assert result.shape == (2, 2)


# --- EmbedderSettings --------------------------------------------------------------------------


def test_settings_from_triton_string_parameters():
    settings = EmbedderSettings.from_parameters(
        {
            "pooling": "cls",
            "normalize": "false",
            "max_length": "128",
            "pad_token": "<pad>",
            "pad_token_id": "1",
            "intra_op_threads": "3",
            "allow_spinning": "TRUE",
            "providers": "CUDAExecutionProvider,CPUExecutionProvider",
        }
    )
    assert settings == EmbedderSettings(
        pooling="cls",
        normalize=False,
        max_length=128,
        pad_token="<pad>",
        pad_token_id=1,
        intra_op_threads=3,
        allow_spinning=True,
        providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
    )


def test_settings_defaults_when_parameters_are_absent():
    assert EmbedderSettings.from_parameters({}) == EmbedderSettings()


def test_unknown_pooling_parameter_is_refused():
    with pytest.raises(ValueError, match="pooling"):
        EmbedderSettings.from_parameters({"pooling": "median"})


# --- TextEmbedder on a tiny real ONNX graph ----------------------------------------------------


@pytest.fixture(scope="module")
def lookup_model(tmp_path_factory) -> tuple[str, np.ndarray]:
    """An ONNX encoder whose token embedding is a table lookup, masked like a real encoder's output."""
    return write_lookup_encoder(tmp_path_factory.mktemp("onnx"))


def test_embedder_pools_only_real_tokens_of_each_text(lookup_model):
    path, table = lookup_model
    embedder = TextEmbedder(path, str(TOKENIZER_FILE), EmbedderSettings(normalize=False, max_length=64))
    texts = ["a much longer sentence than the other one", "short"]
    result = embedder.embed(texts)
    tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
    for row, text in enumerate(texts):
        encoding = tokenizer.encode(text)  # the file pads to 128: keep the real tokens only
        ids = [i for i, real in zip(encoding.ids, encoding.attention_mask, strict=True) if real]
        assert 2 < len(ids) < 64
        np.testing.assert_allclose(result[row], table[ids].mean(axis=0), rtol=1e-5)


def test_embedder_truncates_to_max_length_and_skips_inputs_the_graph_lacks(lookup_model):
    path, _ = lookup_model
    embedder = TextEmbedder(path, str(TOKENIZER_FILE), EmbedderSettings(max_length=8))
    hidden, mask = embedder.encode(["word " * 50, "hi"])
    assert hidden.shape == (2, 8, DIM)
    assert mask.tolist()[0] == [1] * 8
    assert mask.tolist()[1][:3] == [1, 1, 1]
    assert sum(mask.tolist()[1]) == 3  # [CLS] hi [SEP]
    np.testing.assert_allclose(np.linalg.norm(embedder.embed(["hi"]), axis=1), [1.0], rtol=1e-6)


def test_a_text_over_the_byte_cap_is_refused_before_decoding():
    limit = 1000
    assert decode_texts(as_tensor(b"a" * limit), max_bytes=limit) == ["a" * limit]
    with pytest.raises(InvalidTextError, match=r"TEXT\[1\] is 1001 bytes; this model takes at most 1000"):
        decode_texts(as_tensor(b"ok", b"a" * (limit + 1)), max_bytes=limit)


@pytest.mark.parametrize("separator", [" ", "\n", ""])
def test_clipping_before_tokenizing_keeps_the_tokens_a_truncating_model_sees(separator):
    from model_repo_builder.templates.common.trb_runtime import clip_text

    tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
    tokenizer.enable_truncation(max_length=256)
    words = [f"word{index % 97}é" for index in range(200_000)]  # ~1.4 MB
    text = separator.join(words)
    clipped = clip_text(text, 256)
    assert len(clipped) < len(text) / 10
    assert tokenizer.encode(clipped).ids == tokenizer.encode(text).ids
    assert clip_text("short text", 256) == "short text"
