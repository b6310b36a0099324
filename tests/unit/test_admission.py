"""trb's admission queue (templates/common/trb_runtime.py `AdmissionQueue`), driven without Triton.

The worker is held inside `answer` by an event, so what is queued, refused and batched next is
decided by the test, not by timing.
"""

from __future__ import annotations

import queue
import threading
import time

import pytest

from model_repo_builder.templates.common.trb_runtime import AdmissionQueue, instance_share


class Recorder:
    """`answer` and `fail` callbacks that record batches; `answer` can be held on an event."""

    def __init__(self) -> None:
        self.batches: queue.Queue[list[object]] = queue.Queue()
        self.failed: list[tuple[list[object], str]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.raise_on: object = None

    def answer(self, batch: list[object]) -> None:
        self.entered.set()
        self.release.wait(timeout=30)
        if self.raise_on in batch:
            raise RuntimeError("boom")
        self.batches.put(batch)

    def fail(self, batch: list[object], message: str) -> None:
        self.failed.append((batch, message))
        self.batches.put([("failed", item) for item in batch])


def held_queue(bound: int, max_rows: int) -> tuple[AdmissionQueue, Recorder]:
    """A queue whose worker has taken a first item ("first") and is held answering it."""
    recorder = Recorder()
    recorder.release.clear()
    admission = AdmissionQueue(bound=bound, max_rows=max_rows, answer=recorder.answer, fail=recorder.fail)
    assert admission.offer("first", 1)
    assert recorder.entered.wait(timeout=30)
    return admission, recorder


def test_offer_is_refused_once_bound_items_wait_and_accepted_again_after_a_batch() -> None:
    admission, recorder = held_queue(bound=3, max_rows=8)
    assert not admission.full
    assert [admission.offer(name, 1) for name in ("a", "b", "c", "d")] == [True, True, True, False]
    assert admission.depth == 3 and admission.full
    recorder.release.set()
    assert recorder.batches.get(timeout=30) == ["first"]
    assert recorder.batches.get(timeout=30) == ["a", "b", "c"]  # everything queued, in order
    assert admission.offer("e", 1)
    assert recorder.batches.get(timeout=30) == ["e"]
    admission.close()


def test_beyond_bound_admits_when_full_but_not_once_closed() -> None:
    admission, recorder = held_queue(bound=1, max_rows=8)
    assert admission.offer("a", 1) and not admission.offer("b", 1)
    assert admission.offer("b", 1, beyond_bound=True)
    recorder.release.set()
    assert [recorder.batches.get(timeout=30) for _ in range(2)] == [["first"], ["a", "b"]]
    admission.close()
    assert not admission.offer("c", 1, beyond_bound=True)


def test_zero_bound_never_refuses() -> None:
    admission, recorder = held_queue(bound=0, max_rows=1000)
    assert all(admission.offer(index, 1) for index in range(500))
    recorder.release.set()
    assert recorder.batches.get(timeout=30) == ["first"]
    assert recorder.batches.get(timeout=30) == list(range(500))
    admission.close()


def test_idle_only_while_nothing_is_queued_or_being_answered() -> None:
    recorder = Recorder()
    recorder.release.clear()
    admission = AdmissionQueue(bound=0, max_rows=1, answer=recorder.answer, fail=recorder.fail)
    assert admission.idle
    assert admission.offer("first", 1)
    assert recorder.entered.wait(timeout=30)
    assert not admission.idle  # answering, nothing queued
    assert admission.offer("second", 1)
    assert not admission.idle
    recorder.release.set()
    assert [recorder.batches.get(timeout=30) for _ in range(2)] == [["first"], ["second"]]
    deadline = time.monotonic() + 30  # the worker goes back to waiting after its last batch
    while not admission.idle and time.monotonic() < deadline:
        time.sleep(0.01)  # polled with a deadline; the assertion decides
    assert admission.idle
    admission.close()


def test_a_batch_takes_the_oldest_items_whose_rows_fit() -> None:
    admission, recorder = held_queue(bound=0, max_rows=4)
    for name, rows in (("two", 2), ("one", 1), ("three", 3), ("one-more", 1), ("four", 4)):
        assert admission.offer(name, rows)
    recorder.release.set()
    batches = [recorder.batches.get(timeout=30) for _ in range(4)]
    # FIFO: "three" does not fit beside two+one, and nothing jumps ahead of it.
    assert batches == [["first"], ["two", "one"], ["three", "one-more"], ["four"]]
    admission.close()


def test_an_item_larger_than_max_rows_is_still_taken_alone() -> None:
    admission, recorder = held_queue(bound=0, max_rows=2)
    assert admission.offer("big", 5) and admission.offer("small", 1)
    recorder.release.set()
    assert [recorder.batches.get(timeout=30) for _ in range(3)] == [["first"], ["big"], ["small"]]
    admission.close()


def test_a_failing_batch_is_failed_and_the_worker_goes_on() -> None:
    recorder = Recorder()
    recorder.raise_on = "bad"
    admission = AdmissionQueue(bound=0, max_rows=1, answer=recorder.answer, fail=recorder.fail)
    assert admission.offer("bad", 1)
    assert recorder.batches.get(timeout=30) == [("failed", "bad")]
    assert "boom" in recorder.failed[0][1]
    assert admission.offer("good", 1)
    assert recorder.batches.get(timeout=30) == ["good"]
    admission.close()


def test_close_fails_what_is_queued_and_refuses_more() -> None:
    admission, recorder = held_queue(bound=0, max_rows=1)
    assert admission.offer("queued-1", 1) and admission.offer("queued-2", 1)
    closer = threading.Thread(target=admission.close, kwargs={"message": "unloading"})
    closer.start()
    recorder.release.set()  # the batch being answered finishes
    closer.join(timeout=30)
    assert not closer.is_alive()
    assert recorder.batches.get(timeout=30) == ["first"]
    failed_items = [item for batch, message in recorder.failed for item in batch if message == "unloading"]
    assert failed_items == ["queued-1", "queued-2"]
    assert not admission.offer("after", 1)


@pytest.mark.parametrize(
    ("bound", "instances", "share"), [(256, 1, 256), (256, 2, 128), (5, 2, 3), (0, 4, 0)]
)
def test_instance_share_splits_the_bound(bound: int, instances: int, share: int) -> None:
    assert instance_share(bound, instances) == share


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="bound"):
        AdmissionQueue(bound=-1, max_rows=1, answer=print, fail=print)
