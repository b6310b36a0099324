"""The small runtime the served templates share: path bootstrap, UTF-8 text decoding, ONNX Runtime.

Copied next to each repository's `model.py` (importing it first makes the virtual environment
visible to the stub); unit tests import it from the trb package. No Triton import here.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time

# The tritonserver bundled in the nvidia-pytriton wheel embeds the system libpython, whose sys.path
# does not include the virtual environment trb runs from; the launcher passes it in TRB_PYTHONPATH.
# In the NGC container the packages are installed system-wide and the variable is unset.
for _entry in os.environ.get("TRB_PYTHONPATH", "").split(os.pathsep):
    if _entry and _entry not in sys.path:
        sys.path.append(_entry)

from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

import numpy as np  # noqa: E402


class InvalidRequestError(ValueError):
    """A request cannot be served as sent (empty, non-UTF-8, oversized text, a bad parameter)."""


InvalidTextError = InvalidRequestError  # the name the embedding template has always used

# Characters one token can cover, at most: WordPiece turns a word over 100 characters into one [UNK],
# SentencePiece pieces are shorter. `clip_text` keeps this many characters per token of the window.
CHARS_PER_TOKEN_BOUND = 100


def default_max_text_bytes(max_tokens: int) -> int:
    """The per-text byte cap a build writes when not told: room for the whole window in any script."""
    return max(64 * 1024, max_tokens * 512)


def decode_texts(raw: np.ndarray, input_name: str = "TEXT", max_bytes: int | None = None) -> list[str]:
    """Decode a BYTES tensor into strings, rejecting empty, non-UTF-8 and oversized items with their index."""
    texts = []
    for index, item in enumerate(raw.reshape(-1)):
        if isinstance(item, bytes):
            if max_bytes is not None and len(item) > max_bytes:
                raise InvalidRequestError(
                    f"{input_name}[{index}] is {len(item)} bytes; this model takes at most {max_bytes} bytes "
                    "per text (set when the repository was built: `trb build --max-text-bytes`)"
                )
            try:
                text = item.decode("utf-8")
            except UnicodeDecodeError as error:
                bad_byte = item[error.start : error.start + 1]
                raise InvalidRequestError(
                    f"{input_name}[{index}] is not valid UTF-8 (byte {error.start}: {bad_byte!r}); "
                    "send UTF-8 encoded text"
                ) from None
        elif isinstance(item, str):
            text = item
        else:
            raise InvalidRequestError(f"{input_name}[{index}] must be a string, got {type(item).__name__}")
        if not text.strip():
            raise InvalidRequestError(
                f"{input_name}[{index}] is empty; send at least one non-whitespace character"
            )
        texts.append(text)
    return texts


def clip_text(text: str, max_tokens: int) -> str:
    """The start of `text` that holds at least its first `max_tokens` tokens, cut after a whitespace.

    A model that truncates to `max_tokens` gives the clipped text the same tokens as the whole one,
    without tokenizing megabytes it would throw away.
    """
    needed = max_tokens * CHARS_PER_TOKEN_BOUND  # the window's tokens lie within these characters
    limit = 2 * needed
    if len(text) <= limit:
        return text
    cut = max(text.rfind(" ", 0, limit), text.rfind("\n", 0, limit), text.rfind("\t", 0, limit))
    return text[: cut if cut >= needed else limit]


def onnx_session(path: str, intra_op_threads: int, allow_spinning: bool, providers: Sequence[str]) -> Any:
    """An ONNX Runtime session on `intra_op_threads` threads, on the first available of `providers`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    available = set(ort.get_available_providers())
    chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    return ort.InferenceSession(path, options, providers=chosen)


def encoder_feeds(session: Any, encodings: Sequence[Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The inputs an exported encoder takes, from `tokenizers` encodings; and the attention mask."""
    names = {i.name for i in session.get_inputs()}
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
    return {name: value for name, value in feeds.items() if name in names}, mask


# Length-aware batching. An encoder batch is padded to its longest row, so one 256-token passage in a
# dynamic batch makes every 10-token query beside it cost 256 tokens of work. `length_groups` sorts the
# rows by length and cuts them into runs wherever a cut saves more padded work than one more encoder call
# costs. The cost model, in tokens of work: a row padded to L tokens costs L * (1 + L / ATTENTION_LENGTH)
# (self-attention grows with the square of the length); a call costs `call_cost_tokens(threads)`.
# Measured on MiniLM int8 with ONNX Runtime (bench/bench_text_lengths.py's machine): splitting a batch
# in two costs ~10 tokens of work on one thread, but 60-180 tokens on two, whose threads then
# synchronise on smaller matrices; the attention term fits 1/500-1/450 per token of length.
ATTENTION_LENGTH = 512.0


def call_cost_tokens(intra_op_threads: int) -> float:
    """What one more encoder call costs, in tokens of work, for a session on `intra_op_threads`."""
    return 16.0 + 128.0 * (max(intra_op_threads, 1) - 1)


def length_groups(lengths: Sequence[int] | np.ndarray, call_cost: float) -> list[np.ndarray]:
    """Row indices in runs of similar length, each run one padded encoder call; the cheapest split.

    Exact minimum of the cost model over splits of the rows sorted by length (dynamic programming).
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order]
    count = len(ordered)
    best = np.zeros(count + 1)  # best[k]: cheapest cost of the k shortest rows
    start_of = np.zeros(count + 1, dtype=np.int64)
    for end in range(1, count + 1):
        longest = ordered[end - 1]
        starts = np.arange(end)
        costs = best[:end] + call_cost + (end - starts) * longest * (1.0 + longest / ATTENTION_LENGTH)
        start_of[end] = int(np.argmin(costs))
        best[end] = costs[start_of[end]]
    groups: list[np.ndarray] = []
    end = count
    while end > 0:
        groups.append(order[start_of[end] : end])
        end = int(start_of[end])
    return groups[::-1]


def run_by_length(
    session: Any, output_name: str, feeds: dict[str, np.ndarray], mask: np.ndarray, settings: Any
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run the encoder per length group: (row indices, the output for those rows, their mask).

    Each group is cut to its own longest row (the tokenizer pads on the right). Without
    `settings.length_bucketing`, one call over all rows as given.
    """
    if not settings.length_bucketing:
        (output,) = session.run([output_name], feeds)
        yield np.arange(len(mask)), output, mask
        return
    lengths = mask.sum(axis=1)
    for rows in length_groups(lengths, call_cost_tokens(settings.intra_op_threads)):
        width = max(int(lengths[rows].max()), 1)
        (output,) = session.run([output_name], {name: value[rows, :width] for name, value in feeds.items()})
        yield rows, output, mask[rows, :width]


def _step_reason(message: str) -> str:
    """The step's own exception line out of the traceback PyTriton sends back (or the first line)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*:", line)]
    return raised[-1] if raised else (lines[0] if lines else "no message")


class StepError(RuntimeError):
    """A user's pre- or post-processing step failed on a request; the message carries its own."""


def gather_texts(
    requests: list[Any], input_name: str, max_bytes: int | None
) -> tuple[list[Any], list[str], list[tuple[int, int]]]:
    """Each request's texts of `input_name`, decoded, for one batched call over all of them.

    `requests` are Triton requests or their inputs already copied out (`request_inputs`). Returns
    the responses so far (a 400 for each request whose texts cannot be served, None for the
    others), every good request's texts in order, and (request index, text count) per good request.
    Only inside the stub.
    """
    responses: list[Any] = [None] * len(requests)
    texts: list[str] = []
    owners: list[tuple[int, int]] = []
    for index, request in enumerate(requests):
        try:
            decoded = request_texts(request, input_name, max_bytes)
        except InvalidRequestError as error:
            responses[index] = error_response(error)
            continue
        texts.extend(decoded)
        owners.append((index, len(decoded)))
    return responses, texts, owners


def request_texts(request: Any, input_name: str, max_bytes: int | None) -> list[str]:
    """The decoded texts of one request's `input_name` (a Triton request or its inputs copied out).

    Raises:
        InvalidRequestError: If the input is missing or a text cannot be served (`decode_texts`).
    """
    raw = input_array(request, input_name)
    if raw is None:
        raise InvalidRequestError(f"the request has no {input_name} input")
    return decode_texts(raw, input_name, max_bytes)


def input_array(request: Any, name: str) -> np.ndarray | None:
    """Input `name` of a Triton request, or of a request's inputs copied out (a dict); None when absent."""
    if isinstance(request, dict):
        return request.get(name)
    import triton_python_backend_utils as pb_utils

    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def error_response(error: Exception) -> Any:
    """The answer to a request that failed: 500 when a user's step failed, else 400 / INVALID_ARGUMENT.

    Only inside the stub (it imports Triton's python-backend utilities).
    """
    import triton_python_backend_utils as pb_utils

    code = pb_utils.TritonError.INTERNAL if isinstance(error, StepError) else pb_utils.TritonError.INVALID_ARG
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), code))


LAUNCH_PARAMETERS_VARIABLE = "TRB_LAUNCH_PARAMETERS"


def model_parameters(config: dict[str, Any]) -> dict[str, str]:
    """A model's config.pbtxt parameters (as strings), with the launcher's overrides for it on top.

    `trb launch` serving several repositories in one server divides the cores among all their
    instances; it passes each model's share in TRB_LAUNCH_PARAMETERS (JSON: model → name → value),
    so the same built repository runs with fewer threads beside other models, unchanged on disk.
    """
    import json

    parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
    overrides = json.loads(os.environ.get(LAUNCH_PARAMETERS_VARIABLE) or "{}").get(config.get("name"), {})
    return {**parameters, **{key: str(value) for key, value in overrides.items()}}


SIDECARS_VARIABLE = "TRB_SIDECARS"


class Sidecars:
    """Calls a model's pre and post steps: PyTriton servers on loopback that `trb launch` started.

    The launcher passes their endpoints in TRB_SIDECARS (JSON: model → stage → [host:port, …]). A
    model built with steps refuses to load without them: a step is never skipped silently.
    """

    def __init__(self, endpoints: dict[str, list[str]]):
        import threading

        self.endpoints = endpoints
        self._local = threading.local()  # one client per thread and endpoint (the stub may use two threads)

    @classmethod
    def for_model(cls, model: str, steps_file: str) -> Sidecars:
        """The model's steps from its steps.json, reachable at the launcher's endpoints."""
        import json

        if not os.path.isfile(steps_file):
            return cls({})
        with open(steps_file, encoding="utf-8") as handle:
            steps = json.load(handle)
        endpoints = json.loads(os.environ.get(SIDECARS_VARIABLE) or "{}").get(model, {})
        needed = {step["stage"] for step in steps}
        missing = [
            stage
            for stage in sorted(needed)
            if len(endpoints.get(stage, [])) != sum(1 for step in steps if step["stage"] == stage)
        ]
        if missing:
            raise RuntimeError(
                f"{model} has {' and '.join(missing)}-processing steps (sidecars/steps.json) but no sidecar "
                "endpoints: serve it with `trb launch`, which starts them"
            )
        return cls(endpoints)

    def has(self, stage: str) -> bool:
        """Whether the model has steps for `stage`."""
        return bool(self.endpoints.get(stage))

    def _client(self, url: str) -> Any:
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if url not in clients:
            import tritonclient.http as httpclient

            clients[url] = httpclient.InferenceServerClient(url, network_timeout=60.0)
        return clients[url]

    def run_each(self, stage: str, groups: list[Any]) -> list[Any]:
        """`run` over several requests' data in one call per step; each result, or its `StepError`.

        When the joint call fails, each request is run alone, so only the failing ones get an error.
        """
        if not groups or not self.has(stage):
            return list(groups)
        joined = _join(groups)
        try:
            result = self.run(stage, joined)
        except StepError:
            outcomes: list[Any] = []
            for group in groups:
                try:
                    outcomes.append(self.run(stage, group))
                except StepError as error:
                    outcomes.append(error)
            return outcomes
        split, start = [], 0
        for group in groups:
            rows = _rows(group)
            split.append(_slice(result, start, start + rows))
            start += rows
        return split

    def run(self, stage: str, data: Any) -> Any:
        """Pass `data` through the stage's steps in order.

        `data` is a list of texts, a float32 [rows, dim] array, or (named-array steps) a dict of
        arrays with the same number of rows, which each step returns under the same names.
        """
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        for position, url in enumerate(self.endpoints.get(stage, [])):
            texts = isinstance(data, list)
            if isinstance(data, dict):
                named = data
            else:
                named = {
                    "DATA": np.array([[t.encode("utf-8")] for t in data], dtype=np.object_) if texts else data
                }
            tensors = []
            for name, array in named.items():
                tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
                tensor.set_data_from_numpy(array)
                tensors.append(tensor)
            outputs = [httpclient.InferRequestedOutput(name) for name in named]
            try:
                answer = self._client(url).infer("step", tensors, outputs=outputs)
            except InferenceServerException as error:
                reason = _step_reason(error.message())
                raise StepError(f"{stage}-processing step {position} failed: {reason}") from None
            except (ConnectionError, OSError) as error:
                raise StepError(
                    f"{stage}-processing step {position} is unreachable at {url}: {error}"
                ) from None
            if isinstance(data, dict):
                data = {name: answer.as_numpy(name) for name in named}
            else:
                result = answer.as_numpy("DATA")
                data = [row.reshape(-1)[0].decode("utf-8") for row in result] if texts else result
        return data


def _rows(data: Any) -> int:
    return len(next(iter(data.values()))) if isinstance(data, dict) else len(data)


def _slice(data: Any, start: int, end: int) -> Any:
    if isinstance(data, dict):
        return {name: value[start:end] for name, value in data.items()}
    return data[start:end]


def _join(groups: list[Any]) -> Any:
    """Several requests' data as one: texts concatenated, arrays stacked (by name for dicts)."""
    first = groups[0]
    if isinstance(first, list):
        return [item for group in groups for item in group]
    if isinstance(first, dict):
        return {name: np.concatenate([group[name] for group in groups]) for name in first}
    return np.concatenate(groups)


def encoder_parameters(settings: Any) -> dict[str, str]:
    """The string parameters of the fields every encoder template's settings share."""
    return {
        "max_length": str(settings.max_length),
        "max_text_bytes": str(settings.max_text_bytes or ""),
        "pad_token": settings.pad_token,
        "pad_token_id": str(settings.pad_token_id),
        "intra_op_threads": str(settings.intra_op_threads),
        "allow_spinning": str(settings.allow_spinning).lower(),
        "providers": ",".join(settings.providers),
        "length_bucketing": str(settings.length_bucketing).lower(),
    }


def parse_encoder_parameters(parameters: dict[str, str], max_length: int) -> dict[str, Any]:
    """Those shared fields back from Triton's string parameters (`max_length` when absent)."""
    return {
        "max_length": int(parameters.get("max_length", max_length)),
        "max_text_bytes": int(parameters["max_text_bytes"]) if parameters.get("max_text_bytes") else None,
        "pad_token": parameters.get("pad_token", "[PAD]"),
        "pad_token_id": int(parameters.get("pad_token_id", "0")),
        "intra_op_threads": int(parameters.get("intra_op_threads", "1")),
        "allow_spinning": parameters.get("allow_spinning", "false").lower() == "true",
        "providers": tuple(p for p in parameters.get("providers", "CPUExecutionProvider").split(",") if p),
        "length_bucketing": parameters.get("length_bucketing", "true").lower() == "true",
    }


def encoder_runtime(onnx_path: str, tokenizer_path: str, settings: Any) -> tuple[Any, Any, str]:
    """The truncating, padding tokenizer, the ONNX Runtime session and its first output's name."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(tokenizer_path)
    tokenizer.enable_truncation(max_length=settings.max_length)  # pairs: longest first, as transformers
    tokenizer.enable_padding(pad_id=settings.pad_token_id, pad_token=settings.pad_token)
    session = onnx_session(onnx_path, settings.intra_op_threads, settings.allow_spinning, settings.providers)
    return tokenizer, session, session.get_outputs()[0].name


# --- trb's own admission bound -------------------------------------------------------------------
# In Triton 2.51 any queue policy (the only way to bound Triton's queue) turns off the dynamic
# batcher's prefetching, and the batcher then stalls: it forms a batch only while an instance waits,
# and an instance that frees up wakes nobody (up to its 500 ms timeout). So the encoder templates
# keep their own bounded queue: Triton's queue has no policy; execute() admits each request (or
# answers it UNAVAILABLE at once when the bound is reached) and returns, and a worker thread answers
# whatever is queued, in batches of up to max_batch_size rows, through each request's response sender.
#
# Each response sent that way is one round trip between the stub and the server (the python backend's
# ResponseSender::Send waits for the server), where execute()'s return carries a whole batch in one
# message. So below overload execute() answers in place: when the worker is idle, nothing is queued
# and Triton's batch had room for another request (Triton's queue was empty when it formed it), the
# batch is computed and returned as the unbounded template would. While it runs, new requests wait in
# Triton's queue; the next call that finds it backed up (a full batch) admits to trb's bounded queue.

QUEUE_FULL = "the model's queue is full"  # how a refusal's message starts
QUEUE_DEPTH_METRIC = "trb_queue_depth"
ANSWERED_METRIC = "trb_answered_requests"  # per instance: shows how Triton spreads requests over them
QUEUE_DURATION_METRIC = "trb_queue_duration_us"
COMPUTE_DURATION_METRIC = "trb_compute_duration_us"
# The generation template's requests taken and not yet answered (running, or waiting for a decode slot).
IN_FLIGHT_METRIC = "trb_requests_in_flight"


class AdmissionQueue:
    """A bounded FIFO of admitted requests and the worker thread that answers them in batches.

    `offer` admits an item of `rows` rows unless `bound` items already wait (0: no bound). The
    worker takes the oldest items while their rows fit in `max_rows` (always at least one) and calls
    `answer(items)`; if that raises, `fail(items, message)`. `close` stops the worker after the batch
    it is on and fails what is still queued. No Triton import: unit tests drive it with plain items.
    """

    def __init__(
        self,
        *,
        bound: int,
        max_rows: int,
        answer: Any,
        fail: Any,
        name: str = "trb-admission",
    ):
        import collections
        import threading

        if bound < 0 or max_rows < 1:
            raise ValueError(f"bound must be ≥ 0 and max_rows ≥ 1, got {bound} and {max_rows}")
        self.bound, self.max_rows = bound, max_rows
        self._answer, self._fail = answer, fail
        self._waiting: collections.deque[tuple[Any, int]] = collections.deque()
        self._ready = threading.Condition()
        self._closing = False
        self.busy = False  # the worker is answering a batch
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        """Items admitted and not yet taken by the worker."""
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        """Nothing queued and the worker waiting; only `offer` can change that."""
        with self._ready:
            return not self._waiting and not self.busy

    @property
    def full(self) -> bool:
        """Whether `offer` would refuse an item now (unless `beyond_bound`)."""
        return self._closing or bool(self.bound and len(self._waiting) >= self.bound)

    def offer(self, item: Any, rows: int, beyond_bound: bool = False) -> bool:
        """Queue `item` (of `rows` rows) for the worker; False, queueing nothing, when full or closed.

        `beyond_bound` admits it even when full (still not once closed).
        """
        with self._ready:
            if self._closing or (self.bound and not beyond_bound and len(self._waiting) >= self.bound):
                return False
            self._waiting.append((item, rows))
            self._ready.notify()
            return True

    def _take(self) -> list[Any] | None:
        """The next batch, oldest first; None once closing."""
        with self._ready:
            self.busy = False
            while not self._waiting and not self._closing:
                self._ready.wait()
            if self._closing:
                return None
            batch: list[Any] = []
            rows = 0
            while self._waiting and (not batch or rows + self._waiting[0][1] <= self.max_rows):
                item, item_rows = self._waiting.popleft()
                batch.append(item)
                rows += item_rows
            self.busy = True
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._answer(batch)
            except Exception as error:  # every taken item must still be answered, with the reason
                self._fail(batch, f"the batch failed: {error!r}")
        with self._ready:
            self.busy = False

    def close(self, message: str = "the model is being unloaded", timeout_s: float = 60.0) -> None:
        """Stop taking batches, wait for the one being answered, and `fail` every item still queued."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        self._worker.join(timeout=timeout_s)
        with self._ready:
            left = [item for item, _ in self._waiting]
            self._waiting.clear()
        if left:
            self._fail(left, message)


def instance_share(bound: int, instances: int) -> int:
    """Each instance's part of a model's queue bound (0 stays unbounded); the parts add up to ≥ bound.

    Triton hands requests to the model's instances in turn, and each instance keeps its own queue.
    """
    return 0 if bound == 0 else -(-bound // max(instances, 1))


class Admitted:
    """One admitted request inside the stub: its inputs (copied out of Triton), its response sender, when."""

    __slots__ = ("admitted_ns", "inputs", "sender")

    def __init__(self, inputs: dict[str, Any], sender: Any):
        self.inputs, self.sender, self.admitted_ns = inputs, sender, time.monotonic_ns()


def request_rows(request: Any, names: Sequence[str]) -> int:
    """The rows (first dimension) of the request's first present input; 1 without one. In the stub only."""
    import triton_python_backend_utils as pb_utils

    for name in names:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is not None:
            shape = tensor.shape()
            return int(shape[0]) if shape else 1
    return 1


def request_inputs(request: Any, names: Sequence[str]) -> dict[str, Any]:
    """The request's inputs by name as NumPy arrays (None when absent), owned by Python.

    A request's tensors live in shared memory Triton frees once execute() returns, so a request
    answered later keeps these copies instead. Only inside the stub.
    """
    import triton_python_backend_utils as pb_utils

    found: dict[str, Any] = {}
    for name in names:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        found[name] = None if tensor is None else np.array(tensor.as_numpy(), copy=True)
    return found


class TritonAdmission:
    """trb's admission bound inside a python-backend stub: admit or refuse in execute(), answer later.

    `respond(list of input dicts) -> list of InferenceResponse` is the template's batched
    computation, the same one the synchronous path returns from execute(). Only inside the stub.
    """

    def __init__(
        self,
        *,
        config: dict[str, Any],
        parameters: dict[str, str],
        args: dict[str, Any],
        input_names: Sequence[str],
        respond: Any,
    ):
        import queue
        import threading

        self.model = config.get("name", args.get("model_name", ""))
        self.input_names = tuple(input_names)
        self.respond = respond
        self.total_bound = int(parameters["max_queue_size"])
        instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
        self.queue = AdmissionQueue(
            bound=instance_share(self.total_bound, instances),
            max_rows=max(int(config.get("max_batch_size", 1)), 1),
            answer=self._answer,
            fail=self._fail,
            name=f"trb-admission-{args.get('model_instance_name', self.model)}",
        )
        self.answered = 0  # requests computed, in place or by the worker
        # The worker's requests' time in trb's queue and in its batches, summed per request (as
        # Triton's own nv_inference_queue_duration_us / compute_infer_duration_us count theirs):
        # Triton sees such a request only while execute() admits it, so `trb sweep` adds these to
        # its breakdown. Requests answered in place are in Triton's counters and add 0 here.
        self.queue_us = 0.0
        self.compute_us = 0.0
        self.metrics = InstanceMetrics(
            model=self.model,
            instance=args.get("model_instance_name", ""),
            metrics=(
                InstanceMetric(
                    name=QUEUE_DEPTH_METRIC,
                    description="Requests waiting in trb's own queue of a model instance (not yet batched)",
                    kind="gauge",
                    read=lambda: self.queue.depth,
                ),
                InstanceMetric(
                    name=ANSWERED_METRIC,
                    description="Requests a model instance computed an answer for",
                    kind="counter",
                    read=lambda: self.answered,
                ),
                InstanceMetric(
                    name=QUEUE_DURATION_METRIC,
                    description="Microseconds requests waited in trb's queue of a model instance, summed",
                    kind="counter",
                    read=lambda: int(self.queue_us),
                ),
                InstanceMetric(
                    name=COMPUTE_DURATION_METRIC,
                    description="Microseconds of trb worker batches per request of a model instance, summed",
                    kind="counter",
                    read=lambda: int(self.compute_us),
                ),
            ),
            thread_name="trb-queue-depth",
        )
        self._outbox: queue.SimpleQueue[list[tuple[Admitted, Any]] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send, name="trb-responses", daemon=True)
        self._sender.start()

    @staticmethod
    def enabled(parameters: dict[str, str]) -> bool:
        """Whether the model was built with trb's admission bound (else Triton's queue holds requests)."""
        return "max_queue_size" in parameters

    def execute(self, requests: list[Any]) -> list[Any] | None:
        """Answer below overload in place; else admit each request, or refuse it (503) when full.

        A refusal is an UNAVAILABLE response at once. In place: the worker is idle, nothing is
        queued, and the batch has room for another request as large as its largest, so Triton had
        no request waiting when it formed it (its batcher takes them in order while they fit).
        Otherwise the requests of a call that finds the worker idle are all admitted, whatever the
        bound: the worker takes them at once as one batch (Triton's batch never holds more than
        max_batch_size rows), and a warmup sample of batch N arrives as N requests in one call,
        which a bound below N would refuse.
        """
        import triton_python_backend_utils as pb_utils

        into_idle = self.queue.idle  # only this thread offers: seen idle, it stays so until it offers
        if into_idle:
            rows = [request_rows(request, self.input_names) for request in requests]
            if sum(rows) + max(rows) <= self.queue.max_rows:
                responses = self.respond(requests)
                self.answered += len(requests)  # the worker is idle: no other thread adds to it now
                return responses
        refused: list[Any] = [None] * len(requests)
        any_refused = False
        for index, request in enumerate(requests):
            if into_idle or not self.queue.full:  # only this thread adds: seen not full, it stays so
                inputs = request_inputs(request, self.input_names)
                admitted = Admitted(inputs, request.get_response_sender())
                size = rows[index] if into_idle else request_rows(request, self.input_names)
                if self.queue.offer(admitted, size, into_idle):
                    continue
            any_refused = True
            # One error object per response: one shared by several crashed tritonserver 2.51.
            refused[index] = pb_utils.InferenceResponse(
                error=pb_utils.TritonError(
                    f"{QUEUE_FULL} ({self.queue.depth} waiting in this instance, "
                    f"{self.total_bound} for the model); retry with backoff",
                    pb_utils.TritonError.UNAVAILABLE,
                )
            )
        return refused if any_refused else None

    def _answer(self, batch: list[Admitted]) -> None:
        """Compute the batch's responses; the sender thread sends them while the next batch runs."""
        started = time.monotonic_ns()
        responses = self.respond([item.inputs for item in batch])
        took = time.monotonic_ns() - started
        self.queue_us += sum(started - item.admitted_ns for item in batch) / 1000
        self.compute_us += took * len(batch) / 1000
        self.answered += len(batch)
        self._outbox.put(list(zip(batch, responses, strict=True)))

    def _send(self) -> None:
        """Send computed responses until closed (each send waits for the server: off the worker)."""
        import triton_python_backend_utils as pb_utils

        while (answered := self._outbox.get()) is not None:
            for item, response in answered:
                try:
                    item.sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                except Exception as error:  # a client gone away must not fail the rest of the batch
                    pb_utils.Logger.log_error(f"could not send a response: {error!r}")

    def _fail(self, batch: list[Admitted], message: str) -> None:
        import triton_python_backend_utils as pb_utils

        pb_utils.Logger.log_error(f"{self.model}: {message}")
        error = pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL)
        for item in batch:
            try:
                item.sender.send(
                    pb_utils.InferenceResponse(error=error),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
            except Exception as send_error:
                pb_utils.Logger.log_error(f"could not send a response: {send_error!r}")

    def close(self) -> None:
        """Answer what is queued with an error and stop the worker (finalize())."""
        self.metrics.close()
        self.queue.close()
        self._outbox.put(None)  # after the last computed batch
        self._sender.join(timeout=60)


class AdmittingModel:
    """execute() and finalize() of a template that may bound its own queue (a base of TritonPythonModel).

    The template's `initialize` calls `admit(...)`; its `respond(requests)` is the batched computation,
    run by execute() itself (Triton queues) or by the admission worker (trb queues).
    """

    admission: TritonAdmission | None = None

    def respond(self, requests: list[Any]) -> list[Any]:
        """The responses to `requests` (Triton requests or their inputs copied out), in order."""
        raise NotImplementedError

    def admit(
        self,
        config: dict[str, Any],
        parameters: dict[str, str],
        args: dict[str, Any],
        input_names: Sequence[str],
    ) -> None:
        """Answer through trb's admission queue when the model was built with it."""
        if TritonAdmission.enabled(parameters):
            self.admission = TritonAdmission(
                config=config, parameters=parameters, args=args, input_names=input_names, respond=self.respond
            )

    def execute(self, requests: list[Any]) -> list[Any] | None:
        """Admit the requests to trb's queue, or (Triton queues) answer them now."""
        if self.admission is not None:
            return self.admission.execute(requests)
        return self.respond(requests)

    def finalize(self) -> None:
        """Answer requests still queued with an error and stop the worker."""
        if self.admission is not None:
            self.admission.close()


class InstanceMetric(NamedTuple):
    """One metric of a model instance: `read()` gives its current value (a plain Python number)."""

    name: str
    description: str
    kind: str  # "gauge" (set to the value) or "counter" (incremented by what the value grew)
    read: Callable[[], float]


class InstanceMetrics:
    """A model instance's own metrics on Triton's metrics port, kept current by one reporter thread.

    Each update is a message from the stub to the server, so none is sent per request: the thread
    reads every metric every `interval_s` and sends only what changed. Each series carries the
    labels {model, instance}. Triton drops a metric whose family object is gone: the families live as
    long as this object. Where custom metrics are off (`--allow-metrics=false`) nothing is reported.
    Only inside the stub.
    """

    def __init__(
        self,
        *,
        model: str,
        instance: str,
        metrics: Sequence[InstanceMetric],
        thread_name: str = "trb-metrics",
        interval_s: float = 0.25,
    ):
        import threading

        self.interval_s = interval_s
        self._metrics = tuple(metrics)
        self._families, self._series = _metric_series(model, instance, self._metrics)
        self._stop = threading.Event()
        self._reporter = threading.Thread(target=self._report, name=thread_name, daemon=True)
        self._reporter.start()

    def _report(self) -> None:
        if self._series is None:
            return
        last: list[float | None] = [None if metric.kind == "gauge" else 0 for metric in self._metrics]
        while not self._stop.wait(self.interval_s):
            for index, (metric, series) in enumerate(zip(self._metrics, self._series, strict=True)):
                value = metric.read()
                if value == last[index]:
                    continue
                if metric.kind == "gauge":
                    series.set(value)
                else:
                    series.increment(value - (last[index] or 0))
                last[index] = value

    def close(self) -> None:
        """Stop the reporter (finalize())."""
        self._stop.set()
        self._reporter.join(timeout=5)


def _metric_series(model: str, instance: str, metrics: Sequence[InstanceMetric]) -> tuple[Any, Any]:
    """The families of `metrics` and one series of each for this instance; (None, None) when off."""
    import triton_python_backend_utils as pb_utils

    labels = {"model": model, "instance": instance}
    kinds = {"gauge": pb_utils.MetricFamily.GAUGE, "counter": pb_utils.MetricFamily.COUNTER}
    try:
        families = [
            pb_utils.MetricFamily(name=metric.name, description=metric.description, kind=kinds[metric.kind])
            for metric in metrics
        ]
        return families, [family.Metric(labels=labels) for family in families]
    except Exception as error:
        names = " / ".join(metric.name for metric in metrics)
        pb_utils.Logger.log_warn(f"no {names} metrics: {error!r}")
        return None, None


class InFlight:
    """Requests taken and not yet answered, counted by the threads that take and answer them.

    `value` is read without the lock by a reporter: a sample, exact at some instant.
    """

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self.value = 0

    def add(self, count: int) -> None:
        """`count` more requests in flight (negative: answered)."""
        with self._lock:
            self.value += count

    @contextlib.contextmanager
    def holding(self, count: int) -> Iterator[None]:
        """`count` requests are in flight for the duration of the block (answered inside it)."""
        self.add(count)
        try:
            yield
        finally:
            self.add(-count)
