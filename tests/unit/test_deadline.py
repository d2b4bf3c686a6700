"""flowroutes.deadline: a time limit checked cooperatively, nested limits, and that a limit stops real work (a
routes walk) and nothing else."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from flowroutes import deadline
from flowroutes.deadline import TimeLimitExceeded, time_limit


def test_no_limit_never_raises_and_has_no_remaining_time():
    deadline.check()
    assert deadline.remaining() is None
    with time_limit(None):
        deadline.check()
        assert deadline.remaining() is None


def test_a_passed_limit_raises_at_the_next_check_and_says_what_to_do():
    with time_limit(0.05):
        deadline.check()  # not yet
        assert 0.0 < deadline.remaining() <= 0.05
        time.sleep(0.08)
        assert deadline.remaining() == 0.0
        with pytest.raises(TimeLimitExceeded, match=r"limit of 0.05 s and was stopped: shorten the prompt"):
            deadline.check()
    deadline.check()  # the limit ends with its block


def test_an_inner_limit_never_extends_an_outer_one():
    with time_limit(0.05):
        with time_limit(100.0):  # the outer limit ends sooner: it stays
            assert deadline.remaining() <= 0.05
        with time_limit(0.01):  # a shorter inner limit applies inside
            assert deadline.remaining() <= 0.01
        assert 0.01 < deadline.remaining() <= 0.05


def test_the_limit_belongs_to_its_context_not_to_other_threads():
    seen = []
    with time_limit(0.0):
        other = threading.Thread(target=lambda: seen.append(deadline.remaining()))
        other.start()
        other.join()
        copied = contextvars.copy_context().run(deadline.remaining)  # a worker run in a copy (as the server's)
    assert seen == [None] and copied == 0.0


def test_a_routes_walk_past_its_limit_stops():
    from tests.unit.test_routes import hand_trace  # a hand-built trace: no model

    tr = hand_trace()
    assert tr.routes(0.04).edges  # without a limit the walk ends normally
    with time_limit(0.0), pytest.raises(TimeLimitExceeded):
        tr.routes(0.04)
