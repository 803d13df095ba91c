"""What shape (a) of issue 13 would add per batch: one hop through a Faust in-memory channel between agents.

Shape (a) chains one agent per level by in-memory channels; shape (b), the worker's, runs the levels
of a batch back to back in one agent. The difference is the channel hops: two per batch (Level 1 ->
Level 3 -> Level 4). This measures one such hop on a real Faust app (memory store, no broker traffic
on the path; the app starts against KAFKA_BOOTSTRAP_SERVERS): `--envelopes` objects sent one after
another through `--hops` chained agents; CPU per hop and wall-clock latency per hop (send -> the next
agent has it), idle (one at a time) and back to back.

Usage: python -m bench.channel_hop [--envelopes 5000] [--hops 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from typing import Any

import faust


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envelopes", type=int, default=5000)
    parser.add_argument("--hops", type=int, default=2)
    args = parser.parse_args(argv)
    app = faust.App(
        f"hop-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{os.environ.get('KAFKA_BOOTSTRAP_SERVERS', '127.0.0.1:19092')}",  # for the app's start only
        store="memory://",
        web_enabled=False,
    )
    channels = [app.channel() for _ in range(args.hops + 1)]
    arrived: asyncio.Queue[tuple[float, float]] = asyncio.Queue()

    def forward(index: int) -> Any:
        async def agent(stream: Any) -> None:
            async for envelope in stream:
                if index + 1 < args.hops:
                    await channels[index + 1].send(value=(envelope[0], time.perf_counter()))
                else:
                    arrived.put_nowait((envelope[0], time.perf_counter()))

        agent.__name__ = f"level{index}"
        return app.agent(channels[index], name=f"level{index}")(agent)

    for index in range(args.hops):
        forward(index)

    async def drive() -> dict[str, Any]:
        await app.start()
        try:
            idle: list[float] = []
            for _ in range(min(args.envelopes, 1000)):
                sent = time.perf_counter()
                await channels[0].send(value=(sent, sent))
                got, _ = await arrived.get()
                idle.append((time.perf_counter() - got) * 1e3)
            cpu = time.process_time()
            wall = time.perf_counter()
            for _ in range(args.envelopes):
                now = time.perf_counter()
                await channels[0].send(value=(now, now))
            for _ in range(args.envelopes):
                await arrived.get()
            cpu_us = (time.process_time() - cpu) / args.envelopes / args.hops * 1e6
            return {
                "hops": args.hops,
                "envelopes": args.envelopes,
                "idle_ms_per_hop_p50": round(statistics.median(idle) / args.hops, 3),
                "idle_ms_per_hop_p99": round(sorted(idle)[int(len(idle) * 0.99)] / args.hops, 3),
                "back_to_back_cpu_us_per_hop": round(cpu_us, 1),
                "back_to_back_wall_s": round(time.perf_counter() - wall, 2),
                "load": list(os.getloadavg()),
            }
        finally:
            await app.stop()

    result = asyncio.run(drive())
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
