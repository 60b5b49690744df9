"""Priority order restarts from the first queue; fairness is a round robin that remembers where it stopped."""

import pytest

from notebook_agent.engine.queue_order import QueueOrder, QueueRef

A, B, C = QueueRef("a" * 32, "high"), QueueRef("b" * 32, "mid"), QueueRef("c" * 32, "low")


def test_priority_always_starts_from_the_first_queue():
    order = QueueOrder([A, B, C])
    assert order.round() == [A, B, C]
    order.took(B)
    assert order.round() == [A, B, C]


def test_fairness_starts_after_the_queue_served_last():
    order = QueueOrder([A, B, C], fairness=True)
    assert order.round() == [A, B, C]
    order.took(A)
    assert order.round() == [B, C, A]
    order.took(C)
    assert order.round() == [A, B, C]
    order.took(B)
    assert order.round() == [C, A, B]


def test_no_queue_is_an_error():
    with pytest.raises(ValueError):
        QueueOrder([])
