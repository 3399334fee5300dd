"""core.progress: the one progress callback and cancel token every long job takes."""

from __future__ import annotations

import threading

import pytest

from core.errors import Cancelled
from core.progress import CancelToken, eta_text, raise_if_cancelled, throttled


def test_a_cancel_token_is_an_event_and_raises_the_projects_cancel_error():
    token = CancelToken()
    assert isinstance(token, threading.Event) and not token.cancelled
    token.raise_if_cancelled()  # not set: nothing happens
    raise_if_cancelled(None)  # no token: nothing to check
    token.cancel()
    assert token.cancelled and token.is_set()
    with pytest.raises(Cancelled, match="Phantom generation cancelled"):
        token.raise_if_cancelled("Phantom generation cancelled.")
    event = threading.Event()  # what callers already hold works the same
    event.set()
    with pytest.raises(Cancelled):
        raise_if_cancelled(event)


def test_throttled_progress_keeps_the_last_step(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("core.progress.time.monotonic", lambda: clock[0])
    seen: list[tuple[float, float, str]] = []
    report = throttled(lambda d, t, m: seen.append((d, t, m)), 0.05)
    for i in range(1, 11):
        clock[0] += 0.01
        report(i, 10, f"{i}/10")
    # the first, then one every 50 ms, and always the last one
    assert [d for d, _, _ in seen] == [1, 6, 10]


def test_eta_is_words_in_the_message():
    assert eta_text(1, 4, 2.0) == ", about 6 s left"
    assert eta_text(4, 4, 8.0) == "" and eta_text(0, 4, 0.0) == ""
