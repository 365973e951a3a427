"""The observer interface: a broken observer costs only itself, never the job or the other observers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest

from pgqueue import JobEvent, Observer
from pgqueue.worker.events import AttemptScope, Event, Observers


def event(kind: Event = Event.STARTED) -> JobEvent:
    return JobEvent(kind, 1, "task", "default", 1, "host:1:abc")


class Recorder(Observer):
    def __init__(self) -> None:
        self.seen: list[Event] = []
        self.errors: list[str | None] = []

    def job_event(self, event: JobEvent) -> None:
        self.seen.append(event.event)

    @contextlib.contextmanager
    def attempt(self, started: JobEvent, scope: AttemptScope) -> Iterator[None]:
        scope.trace_id = scope.trace_id or "abc"
        try:
            yield
        finally:
            self.errors.append(scope.error)


class Broken(Observer):
    def job_event(self, event: JobEvent) -> None:
        raise RuntimeError("exporter down")

    @contextlib.contextmanager
    def attempt(self, started: JobEvent, scope: AttemptScope) -> Iterator[None]:
        raise RuntimeError("cannot start a span")
        yield


class BrokenOnExit(Observer):
    @contextlib.contextmanager
    def attempt(self, started: JobEvent, scope: AttemptScope) -> Iterator[None]:
        yield
        raise RuntimeError("cannot end a span")


def test_no_observers_is_false_and_traces_nothing() -> None:
    observers = Observers()
    assert not observers and not observers.traces
    observers.add(Observer())
    assert observers and not observers.traces  # the base attempt() is not a tracer: no scope per job
    observers.add(Recorder())
    assert observers.traces


def test_a_broken_observer_is_logged_once_and_the_others_still_see_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    observers = Observers([Broken(), BrokenOnExit(), recorder])
    with caplog.at_level(logging.ERROR, logger="pgqueue.worker"):
        for _ in range(3):
            observers.emit(event())
            with observers.attempt(event()) as scope:
                scope.error = "ValueError: boom"
            assert scope.trace_id == "abc"
    assert recorder.seen == [Event.STARTED] * 3
    assert recorder.errors == ["ValueError: boom"] * 3
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [
        "observer Broken failed; its later failures are not logged",
        "observer BrokenOnExit failed; its later failures are not logged",
    ]


def test_a_cancelled_attempt_still_closes_every_scope() -> None:
    recorder = Recorder()
    observers = Observers([BrokenOnExit(), recorder])
    with pytest.raises(KeyboardInterrupt), observers.attempt(event()):
        raise KeyboardInterrupt  # a BaseException through the scopes, as CancelledError is
    assert recorder.errors == [None]
