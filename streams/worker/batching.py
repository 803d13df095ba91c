"""Batching of an agent's stream: the events it has ready, handled as one unit and acked after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

READY_WAIT_S = 0.05  # how long a batch in hand waits for an event the stream already has queued


async def batches(stream: Any, limit: int, window_s: float = 0.0) -> AsyncIterator[list[Any]]:
    """The events a stream has ready, up to `limit`, as one batch; acked only once the batch is handled.

    No waiting for a batch to fill beyond `window_s` (once, when the stream runs dry), and no waiting at
    all after a batch of one: an event that arrives alone, after a lone one, is handled at once
    (latency: an idle worker's decision is not held for the window); once events come together the
    window gathers the next ones (throughput), and under load the queue is never empty and batches
    grow. The acks come after the consumer of a batch returns, never on the way out of a cancelled or
    failed batch.

    The next event is always awaited in a task of its own, and a batch in hand never waits for it for
    long: when a rebalance starts, Faust suspends the streams and waits until every event they handed
    out is acked, so a batch held while waiting for one more event would never be acked, and the
    worker would never finish the rebalance (seen in the add/remove test: every agent idle, Faust
    logging `wait_empty` for 15 minutes, the group stuck rebalancing).
    """
    manual = stream.noack()
    channel = stream.channel
    events = manual.events().__aiter__()
    ahead: asyncio.Future[Any] = asyncio.ensure_future(events.__anext__())
    window = 0.0  # the previous batch was not a crowd
    try:
        while True:
            try:
                batch = [await ahead]  # nothing in hand while this waits
            except StopAsyncIteration:
                return
            ahead = asyncio.ensure_future(events.__anext__())
            waited = False
            while len(batch) < limit:
                if not ahead.done():
                    if channel.empty() and (waited or window <= 0):
                        break
                    waited = waited or channel.empty()
                    await asyncio.wait({ahead}, timeout=window if channel.empty() else READY_WAIT_S)
                    if not ahead.done():
                        break
                if ahead.exception() is not None:
                    break  # raised again by `await ahead` once this batch is handled
                batch.append(ahead.result())
                ahead = asyncio.ensure_future(events.__anext__())
            window = window_s if len(batch) > 1 else 0.0
            yield batch
            for done in batch:
                await manual.ack(done)
    finally:
        ahead.cancel()
