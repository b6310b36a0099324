"""Triton python-backend model: TYPE_STRING prompts in, generated TYPE_STRING text and token ids out.

Every request of a dynamic batch is validated on its own, so a bad request gets its own INVALID_ARG
error while the others are answered normally. The valid ones are generated together: one encoder
call and one batched, KV-cached decode loop per execute(), finished sequences leaving the batch.

With the `batching` parameter set to `continuous`, execute() only queues the requests and returns; a
background thread runs the iteration-level loop of continuous.py (new requests join the running
batch at the next decode step) and answers each request through its response sender once all its
prompts are done (one response per request, so the model stays non-decoupled). Requests that ask
for beam search (NUM_BEAMS > 1) cannot join that batch; a second thread answers them beside it.

Every instance exports the gauge `trb_requests_in_flight` {model, instance}: requests it has taken
from Triton and not yet answered — running in the decode batch, waiting for a slot in it or in the
beam-search queue, or inside execute() (request batching, streaming). Continuous batching takes each
request out of Triton's queue at once, so this, not Triton's pending count, is the load an
autoscaler reads (`deploy/autoscaling.py`). A reporter thread sends it every 0.25 s, never per request.

The same file serves the streaming variant (decoupled transaction policy): there each request holds
one prompt and gets one response per generated token (its text delta and id), then an empty final
response. The streaming model loads the ONNX files of the model named by its `weights_model`
parameter, so the repository holds them once.
"""

import json
import os
import queue
import threading

import trb_runtime  # noqa: F401  (first: makes the virtual environment importable in the stub)

# isort: split
import numpy as np
import triton_python_backend_utils as pb_utils
from continuous import ContinuousBatch
from generation import (
    PARAMETER_INPUTS,
    PROMPT_INPUT,
    TEXT_OUTPUT,
    TOKEN_IDS_OUTPUT,
    GeneratorSettings,
    InvalidRequestError,
    Seq2SeqGenerator,
    TextStream,
    decode_prompts,
    pad_token_rows,
    request_params,
)
from trb_runtime import (
    IN_FLIGHT_METRIC,
    InFlight,
    InstanceMetric,
    InstanceMetrics,
    Sidecars,
    StepError,
    error_response,
    model_parameters,
)


def _optional_input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    """Generates text for every prompt of every request in one batched decode loop per execute()."""

    def initialize(self, args):
        """Load the tokenizer and the ONNX Runtime sessions from the version directory."""
        config = json.loads(args["model_config"])
        parameters = model_parameters(config)
        settings = GeneratorSettings.from_parameters(parameters)
        if args["model_instance_kind"] == "GPU":
            settings = GeneratorSettings(
                **{**settings.__dict__, "providers": ("CUDAExecutionProvider", "CPUExecutionProvider")}
            )
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        model_dir = args["model_repository"]
        if parameters.get("weights_model"):
            model_dir = os.path.join(os.path.dirname(model_dir.rstrip(os.sep)), parameters["weights_model"])
        version_dir = os.path.join(model_dir, args["model_version"])
        self.generator = Seq2SeqGenerator.from_directory(version_dir, settings)
        # The streaming variant shares the weights model's steps (pre only: post steps see whole texts).
        steps_file = os.path.join(model_dir, "sidecars", "steps.json")
        self.sidecars = Sidecars.for_model(parameters.get("weights_model") or args["model_name"], steps_file)
        self.continuous = not self.decoupled and parameters.get("batching", "request") == "continuous"
        self.in_flight = InFlight()
        self.metrics = InstanceMetrics(
            model=config.get("name", args["model_name"]),
            instance=args.get("model_instance_name", ""),
            metrics=(
                InstanceMetric(
                    name=IN_FLIGHT_METRIC,
                    description="Requests a model instance has taken and not yet answered (generating or "
                    "waiting for a place in its decode batch)",
                    kind="gauge",
                    read=lambda: self.in_flight.value,
                ),
            ),
            thread_name="trb-in-flight",
        )
        if self.continuous:
            ContinuousBatch(self.generator)  # a repository that cannot batch continuously fails to load
            self._max_running = int(parameters.get("max_running", "32"))
            self._queue = queue.Queue()
            self._stopping = threading.Event()
            self._loop = threading.Thread(target=self._run_continuous, name="trb-continuous", daemon=True)
            self._loop.start()
            # Beam searches cannot join the running batch: they run beside it, one request at a time.
            self._beam_queue = queue.Queue()
            self._beams = threading.Thread(target=self._run_beams, name="trb-beams", daemon=True)
            self._beams.start()

    def finalize(self):
        """Stop the continuous-batching loop (requests still queued are answered with an error)."""
        if getattr(self, "continuous", False):
            self._stopping.set()
            self._loop.join(timeout=30)
            self._beams.join(timeout=30)
        if getattr(self, "metrics", None) is not None:
            self.metrics.close()

    def _parse(self, request):
        raw = pb_utils.get_input_tensor_by_name(request, PROMPT_INPUT).as_numpy()
        prompts = decode_prompts(raw, PROMPT_INPUT, self.generator.settings.max_text_bytes)
        if self.sidecars.has("pre"):
            prompts = self.sidecars.run("pre", prompts)
        values = {spec.name: _optional_input(request, spec.name) for spec in PARAMETER_INPUTS}
        params = request_params(len(prompts), values, self.generator.settings)
        return self.generator.tokenize(prompts), params

    def execute(self, requests):
        """Answer each request with its own rows of one batched generation (or stream them)."""
        if self.continuous:
            self._enqueue(requests)
            return None
        with self.in_flight.holding(len(requests)):
            if self.decoupled:
                self._stream(requests)
                return None
            return self._generate(requests)

    def _generate(self, requests):
        """Request batching: generate the valid requests together, to completion."""
        responses = [None] * len(requests)
        token_ids, params, owners = [], [], []
        for index, request in enumerate(requests):
            try:
                request_ids, request_params_ = self._parse(request)
            except (InvalidRequestError, StepError) as error:
                responses[index] = error_response(error)
                continue
            token_ids.extend(request_ids)
            params.extend(request_params_)
            owners.append((index, len(request_ids)))
        if token_ids:
            generated = self.generator.generate_ids(token_ids, params)
            start = 0
            for index, count in owners:
                responses[index] = self._answer(generated[start : start + count])
                start += count
        return responses

    def _answer(self, rows):
        """The response to one request: its generated texts (through the post steps) and ids."""
        texts = [self.generator.detokenize(ids) for ids in rows]
        if self.sidecars.has("post"):
            try:
                texts = self.sidecars.run("post", texts)
            except StepError as error:
                return error_response(error)
        return _generated(texts, rows)

    def _stream(self, requests):
        """Generate one prompt per request together, sending each token to its request as it is made."""
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        senders, token_ids, params = [], [], []
        for request in requests:
            sender = request.get_response_sender()
            try:
                request_ids, request_params_ = self._parse(request)
                if len(request_ids) != 1:
                    raise InvalidRequestError(
                        f"a streaming request holds exactly one prompt, got {len(request_ids)}; "
                        "send one request per prompt"
                    )
                if request_params_[0].num_beams > 1:
                    raise InvalidRequestError("beam search cannot stream; use the non-streaming model")
            except (InvalidRequestError, StepError) as error:
                sender.send(error_response(error), flags=final)
                continue
            senders.append(sender)
            token_ids.extend(request_ids)
            params.extend(request_params_)
        if not token_ids:
            return
        streams = [TextStream(self.generator.detokenize) for _ in senders]
        closed = set()

        def send_step(rows, tokens, done):
            for row, token, finished in zip(rows, tokens, done, strict=True):
                delta = streams[row].push(int(token))
                if finished:
                    delta += streams[row].flush()
                text = np.array([[delta.encode("utf-8")]], dtype=np.object_)
                response = pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor(TEXT_OUTPUT, text),
                        pb_utils.Tensor(TOKEN_IDS_OUTPUT, np.array([[token]], dtype=np.int64)),
                    ]
                )
                senders[row].send(response)
                if finished:
                    senders[row].send(flags=final)
                    closed.add(int(row))

        try:
            self.generator.generate_ids(token_ids, params, on_step=send_step)
        except Exception as error:  # every open stream must still be closed, with the reason
            pb_utils.Logger.log_error(f"streaming generation failed: {error!r}")
            failure = pb_utils.TritonError(f"generation failed: {error}", pb_utils.TritonError.INTERNAL)
            for row, sender in enumerate(senders):
                if row not in closed:
                    sender.send(pb_utils.InferenceResponse(error=failure), flags=final)

    def _enqueue(self, requests):
        """Validate each request and queue it for the continuous loop; answer bad ones at once."""
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            sender = request.get_response_sender()
            try:
                request_ids, request_params_ = self._parse(request)
            except (InvalidRequestError, StepError) as error:
                sender.send(error_response(error), flags=final)
                continue
            pending = _Pending(sender, request_ids, request_params_, self.in_flight)
            if any(row_params.num_beams > 1 for row_params in request_params_):
                self._beam_queue.put(pending)
            else:
                self._queue.put(pending)

    def _run_continuous(self):
        """Admit queued prompts between decode steps until finalize(); answer each request when done."""
        batch = ContinuousBatch(self.generator)  # checked in initialize()
        waiting = []  # prompts queued but not yet admitted: (pending, row)
        open_requests = set()
        while not self._stopping.is_set():
            try:
                if not waiting and not len(batch):
                    waiting.extend(self._queue.get(timeout=0.1).rows())
                while True:
                    waiting.extend(self._queue.get_nowait().rows())
            except queue.Empty:
                pass
            try:
                waiting = [(pending, row) for pending, row in waiting if not pending.closed]
                room = max(0, self._max_running - len(batch))
                admitted, waiting = waiting[:room], waiting[room:]
                if admitted:
                    open_requests.update(pending for pending, _ in admitted)
                    batch.admit(
                        [pending.token_ids[row] for pending, row in admitted],
                        [pending.params[row] for pending, row in admitted],
                        admitted,
                    )
                events = batch.step()
                for event in events:
                    if event.done:
                        pending, row = event.tag
                        if pending.finish(row, event.tokens, self._answer):
                            open_requests.discard(pending)
            except Exception as error:  # every open request must still be answered, with the reason
                pb_utils.Logger.log_error(f"continuous generation failed: {error!r}")
                for pending in open_requests:
                    pending.fail(f"generation failed: {error}")
                open_requests.clear()
                batch = ContinuousBatch(self.generator)
        for pending in open_requests | {pending for pending, _ in waiting}:
            pending.fail("the model is being unloaded")
        while not self._queue.empty():
            self._queue.get_nowait().fail("the model is being unloaded")

    def _run_beams(self):
        """Answer queued beam-search requests (with their other prompts) until finalize()."""
        while not self._stopping.is_set():
            try:
                pending = self._beam_queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                generated = self.generator.generate_ids(pending.token_ids, pending.params)
            except Exception as error:  # the request must still be answered, with the reason
                pb_utils.Logger.log_error(f"beam search failed: {error!r}")
                pending.fail(f"generation failed: {error}")
                continue
            for row, ids in enumerate(generated):
                pending.finish(row, ids, self._answer)
        while not self._beam_queue.empty():
            self._beam_queue.get_nowait().fail("the model is being unloaded")


def _generated(texts, rows):
    """The answer to one request: each prompt's generated text, and its ids (padded)."""
    encoded = np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_)
    return pb_utils.InferenceResponse(
        [pb_utils.Tensor(TEXT_OUTPUT, encoded), pb_utils.Tensor(TOKEN_IDS_OUTPUT, pad_token_rows(rows))]
    )


class _Pending:
    """One request in the continuous loop: its prompts and the ids generated for each so far."""

    def __init__(self, sender, token_ids, params, in_flight):
        self.sender, self.token_ids, self.params = sender, token_ids, params
        self.results = [None] * len(token_ids)
        self.remaining = len(token_ids)
        self.closed = False  # answered (with an error): rows still running are dropped silently
        self._in_flight = in_flight
        in_flight.add(1)

    def _close(self):
        """Mark the request answered (once): it is no longer in flight."""
        self.closed = True
        self._in_flight.add(-1)

    def rows(self):
        return [(self, row) for row in range(len(self.token_ids))]

    def finish(self, row, tokens, answer):
        """Record prompt `row`'s ids; send `answer(all ids)` when it was the last one. True once sent."""
        if self.closed:
            return True
        self.results[row] = list(tokens)
        self.remaining -= 1
        if self.remaining:
            return False
        self._close()
        try:
            self.sender.send(answer(self.results), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as error:  # a client gone away must not fail the other running requests
            pb_utils.Logger.log_error(f"could not send a response: {error!r}")
        return True

    def fail(self, message):
        if self.closed:
            return
        self._close()
        error = pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL)
        self.sender.send(
            pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        )
