"""The receive-buffer pool (glancefs.api.buffers): pure logic, no server."""
from __future__ import annotations

from glancefs.api.buffers import BufferPool


def test_a_buffer_nobody_holds_any_more_is_used_again() -> None:
    pool = BufferPool(16, capacity=4)
    first = pool.take()
    first_id = id(first)
    del first
    again = pool.take()
    assert id(again) == first_id
    assert (pool.made, pool.reused) == (1, 1)


def test_a_buffer_still_held_elsewhere_is_never_handed_out() -> None:
    pool = BufferPool(16, capacity=4)
    held = pool.take()
    held[:] = b"h" * 16          # in the cache, or queued for the hashing thread
    other = pool.take()
    other[:] = b"o" * 16
    assert other is not held
    assert held == b"h" * 16      # what the other holder reads is untouched
    view = memoryview(pool.take())[4:8]   # a view of a buffer holds it too
    del other
    assert pool.take() is not view.obj


def test_at_most_capacity_buffers_are_kept() -> None:
    pool = BufferPool(16, capacity=2)
    held = [pool.take() for _ in range(5)]   # all held: three are not the pool's
    assert len(pool) == 2 and pool.made == 5
    del held
    assert pool.take() is not None and pool.reused == 1 and len(pool) == 2
