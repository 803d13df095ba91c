"""One row of the replay scaling table (issue 16): a tape replayed in a fresh process, read as a stream.

Usage: python -m bench.replay_scaling TAPE [--seconds 300]
Prints JSON: lines, lines replayed, replay events/s, orjson-parse-only events/s over the same stream (after
the replay), and the process's resident memory after start-up and at its peak (VmHWM) during the replay.
The tape is read line by line, never held, so the peak is the engine's state plus the interpreter's.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from schemas.config import load_config
from streams.core.engine import Engine
from streams.tape import replay


class CountingSink:
    """A sink that keeps the byte and line counts of the outputs, not the outputs."""

    def __init__(self) -> None:
        self.bytes = 0
        self.lines = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        self.lines += 1
        return len(data)


def rss_mib() -> dict[str, float]:
    """VmRSS and VmHWM (peak) of this process, in MiB."""
    found: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = round(int(value.split()[0]) / 1024, 1)
    return found


def lines_until(handle: IO[bytes], deadline: float) -> Iterator[bytes]:
    """The file's lines until `deadline` (monotonic) has passed; checked every 1,000 lines."""
    for i, line in enumerate(handle):
        if i % 1000 == 0 and time.monotonic() > deadline:
            return
        yield line


def measure(tape: Path, seconds: float) -> dict[str, Any]:
    config = load_config(None)
    engine = Engine(config)
    at_start = rss_mib()
    sink = CountingSink()
    with tape.open("rb") as handle:
        started = time.perf_counter()
        replayed = replay(engine, lines_until(handle, time.monotonic() + seconds), sink)  # type: ignore[arg-type]
        replay_s = time.perf_counter() - started
    after = rss_mib()
    parsed = 0
    with tape.open("rb") as handle:
        started = time.perf_counter()
        for line in handle:
            if parsed == replayed:
                break
            if line.strip():
                orjson.loads(line)
                parsed += 1
        parse_s = time.perf_counter() - started
    return {
        "tape": tape.name,
        "replayed": replayed,
        "outputs": sink.lines,
        "replay_events_per_s": round(replayed / replay_s),
        "parse_only_events_per_s": round(parsed / parse_s),
        "ratio": round(parse_s / replay_s, 4),
        "rss_mib_start": at_start["VmRSS"],
        "rss_mib_end": after["VmRSS"],
        "peak_rss_mib": after["VmHWM"],
        "replay_s": round(replay_s, 1),
        "load": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tape", type=Path)
    parser.add_argument("--seconds", type=float, default=300.0, help="Stop the replay after this long.")
    args = parser.parse_args()
    print(json.dumps(measure(args.tape, args.seconds)))


if __name__ == "__main__":
    main()
