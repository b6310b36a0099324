"""Length-aware batching (trb_runtime.length_groups / run_by_length) and its use by the embedder."""

import itertools

import numpy as np
import pytest
from encoder_fixtures import TOKENIZER_FILE, write_lookup_encoder

from model_repo_builder.templates.common.trb_runtime import (
    ATTENTION_LENGTH,
    call_cost_tokens,
    length_groups,
    run_by_length,
)
from model_repo_builder.templates.embedding.text_embedding import EmbedderSettings, TextEmbedder


def cost(groups: list[np.ndarray], lengths: np.ndarray, call_cost: float) -> float:
    """The cost model length_groups minimises, evaluated on a partition."""
    total = 0.0
    for rows in groups:
        longest = float(lengths[rows].max())
        total += call_cost + len(rows) * longest * (1 + longest / ATTENTION_LENGTH)
    return total


def cheapest_split_by_brute_force(lengths: np.ndarray, call_cost: float) -> float:
    """Every split of the rows sorted by length into contiguous runs, tried one by one."""
    order = np.argsort(lengths, kind="stable")
    best = float("inf")
    for cuts in itertools.product((False, True), repeat=len(order) - 1):
        groups, start = [], 0
        for index, cut in enumerate(cuts, start=1):
            if cut:
                groups.append(order[start:index])
                start = index
        groups.append(order[start:])
        best = min(best, cost(groups, lengths, call_cost))
    return best


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("seed", range(20))
def test_the_split_is_the_cheapest_one_and_covers_every_row_once(seed, threads):
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(3), np.log(256), size=rng.integers(1, 10))).astype(int)
    call_cost = call_cost_tokens(threads)
    groups = length_groups(lengths, call_cost)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    expected = cheapest_split_by_brute_force(lengths, call_cost)
    assert cost(groups, lengths, call_cost) == pytest.approx(expected, rel=1e-12)


def test_rows_of_one_length_stay_one_call():
    assert [rows.tolist() for rows in length_groups([17] * 12, call_cost_tokens(1))] == [list(range(12))]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_one_long_passage_does_not_pad_the_short_queries(threads):
    lengths = [10] * 7 + [256] + [12] * 7
    groups = length_groups(lengths, call_cost_tokens(threads))
    assert [7] in [rows.tolist() for rows in groups]
    assert all(lengths[row] <= 12 for rows in groups if 7 not in rows for row in rows)


def test_near_equal_lengths_stay_together_where_calls_cost_more_on_more_threads():
    lengths = [20] * 8 + [26] * 8  # one call pads 48 tokens; a second call costs more on 2 threads
    assert len(length_groups(lengths, call_cost_tokens(1))) == 2
    assert len(length_groups(lengths, call_cost_tokens(2))) == 1


def test_a_call_costs_more_on_more_threads():
    assert call_cost_tokens(1) < call_cost_tokens(2) < call_cost_tokens(4)


def test_groups_run_in_order_of_length():
    groups = length_groups([200, 5, 90, 6, 180, 95], call_cost_tokens(1))
    longest = [max([200, 5, 90, 6, 180, 95][row] for row in rows) for rows in groups]
    assert longest == sorted(longest)


@pytest.fixture(scope="module")
def lookup_model(tmp_path_factory) -> tuple[str, np.ndarray]:
    return write_lookup_encoder(tmp_path_factory.mktemp("onnx"))


class RecordingSession:
    """An ONNX Runtime session that remembers the shape of every call (the padded work done)."""

    def __init__(self, session):
        self.session = session
        self.shapes: list[tuple[int, ...]] = []

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feeds):
        self.shapes.append(feeds["input_ids"].shape)
        return self.session.run(names, feeds)


TEXTS = [
    "short query",
    " ".join(["a long passage about serving many models on one machine"] * 12),
    "another short one",
    "a medium length sentence that is neither a query nor a passage at all",
    "ok",
    " ".join(["the second long passage repeats itself to fill the window"] * 12),
]


def test_bucketed_embeddings_equal_one_padded_call_in_the_callers_order(lookup_model):
    path, _ = lookup_model
    settings = EmbedderSettings(normalize=False, max_length=128)
    bucketed = TextEmbedder(path, str(TOKENIZER_FILE), settings)
    recorder = bucketed.session = RecordingSession(bucketed.session)
    single = TextEmbedder(
        path, str(TOKENIZER_FILE), EmbedderSettings(**{**settings.__dict__, "length_bucketing": False})
    )
    expected = single.embed(TEXTS)
    np.testing.assert_allclose(bucketed.embed(TEXTS), expected, rtol=1e-6, atol=1e-7)
    padded_work = sum(rows * width for rows, width in recorder.shapes)
    assert len(recorder.shapes) > 1
    assert padded_work < len(TEXTS) * max(width for _, width in recorder.shapes)


def test_run_by_length_gives_each_row_its_own_tokens_unpadded_by_longer_rows(lookup_model):
    path, table = lookup_model
    embedder = TextEmbedder(path, str(TOKENIZER_FILE), EmbedderSettings(max_length=128))
    hidden, mask = embedder.encode(TEXTS)
    feeds = {"input_ids": None, "attention_mask": mask}
    encodings = embedder.tokenizer.encode_batch(TEXTS)
    feeds["input_ids"] = np.array([e.ids for e in encodings], dtype=np.int64)
    seen = {}
    for rows, output, rows_mask in run_by_length(
        embedder.session, "last_hidden_state", feeds, mask, embedder.settings
    ):
        assert output.shape[1] == rows_mask.sum(axis=1).max()  # cut to the group's longest row
        for position, row in enumerate(rows.tolist()):
            seen[row] = output[position, : int(rows_mask[position].sum())]
    assert sorted(seen) == list(range(len(TEXTS)))
    for row in range(len(TEXTS)):
        real = int(mask[row].sum())
        np.testing.assert_array_equal(seen[row], hidden[row, :real])


def test_bucketing_is_a_parameter_that_round_trips():
    assert EmbedderSettings.from_parameters({"length_bucketing": "false"}).length_bucketing is False
    assert EmbedderSettings.from_parameters({}).length_bucketing is True
