"""`streams.worker.batching.batches`: the agents' batching never holds events while it waits for more.

A stand-in stream carries exactly what `batches` uses of Faust's (`noack`, `events`, `ack`, the
channel's `empty`); the real one runs in the integration tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams.worker.batching import batches


class _Channel:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def empty(self) -> bool:
        return self.queue.empty()


class _Stream:
    """Hands out what is put on its channel; like Faust's, it blocks when the channel is empty."""

    def __init__(self, suspend_after: Any = None) -> None:
        self.channel = _Channel()
        self.acked: list[Any] = []
        self.suspend_after = suspend_after
        self.flowing = asyncio.Event()
        self.flowing.set()

    def noack(self) -> _Stream:
        return self

    async def events(self) -> Any:
        while True:
            await self.flowing.wait()  # Faust's flow control: suspended at a rebalance, queue or not
            item = await self.channel.queue.get()
            if item is None:
                return
            if item == self.suspend_after:
                self.flowing.clear()
            yield item

    async def ack(self, event: Any) -> None:
        self.acked.append(event)


async def _take(gen: Any, timeout: float = 2.0) -> list[Any]:
    return list(await asyncio.wait_for(gen.__anext__(), timeout))


def test_batches_when_stream_has_several_ready_then_one_batch_up_to_the_limit() -> None:
    async def scenario() -> None:
        stream = _Stream()
        for i in range(5):
            stream.channel.queue.put_nowait(i)
        gen = batches(stream, limit=3)
        assert await _take(gen) == [0, 1, 2]
        assert await _take(gen) == [3, 4]
        assert stream.acked == [0, 1, 2]  # a batch is acked once its consumer comes back for the next
        await gen.aclose()

    asyncio.run(scenario())


def test_batches_when_flow_is_suspended_with_events_queued_then_the_batch_in_hand_is_yielded_and_acked() -> None:
    async def scenario() -> None:
        stream = _Stream(suspend_after="b")
        for item in ("a", "b", "c"):
            stream.channel.queue.put_nowait(item)
        gen = batches(stream, limit=100)
        # "c" is queued, but the stream hands out nothing more until flow resumes (after the rebalance,
        # which Faust only finishes once "a" and "b" are acked)
        assert await _take(gen) == ["a", "b"]
        more = asyncio.ensure_future(gen.__anext__())
        await asyncio.sleep(0.05)
        assert stream.acked == ["a", "b"]
        assert not more.done()
        stream.flowing.set()
        assert list(await asyncio.wait_for(more, 2.0)) == ["c"]
        await gen.aclose()

    asyncio.run(scenario())


def test_batches_when_the_stream_ends_then_the_last_batch_is_yielded_and_iteration_stops() -> None:
    async def scenario() -> list[list[Any]]:
        stream = _Stream()
        for item in ("x", "y", None):
            stream.channel.queue.put_nowait(item)
        return [batch async for batch in batches(stream, limit=10)]

    assert asyncio.run(scenario()) == [["x", "y"]]


def test_batches_when_events_come_alone_then_no_window_wait_and_after_a_crowd_the_window_gathers() -> None:
    async def scenario() -> None:
        stream = _Stream()
        gen = batches(stream, limit=100, window_s=0.3)
        stream.channel.queue.put_nowait("alone")
        assert await _take(gen) == ["alone"]
        loop = asyncio.get_running_loop()
        stream.channel.queue.put_nowait("alone again")
        started = loop.time()
        assert await _take(gen) == ["alone again"]
        assert loop.time() - started < 0.2  # handled at once, not held for the 0.3 s window

        stream.channel.queue.put_nowait("c1")
        stream.channel.queue.put_nowait("c2")
        assert await _take(gen) == ["c1", "c2"]  # a crowd: the next batch waits the window for company
        stream.channel.queue.put_nowait("d1")
        loop.call_later(0.1, stream.channel.queue.put_nowait, "d2")
        assert await _take(gen) == ["d1", "d2"]
        await gen.aclose()

    asyncio.run(scenario())
