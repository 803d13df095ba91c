"""Replay throughput on a `riskguard gen` tape, beside an orjson-parse-only loop (the floor cost).

Usage: python bench/replay_throughput.py [--symbols 500] [--accounts 50] [--days 1] [--seed 7]
Writes the generated tape under out/bench/ (reused when present) and prints JSON figures.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import orjson

from schemas.config import load_config
from streams.core.engine import Engine
from streams.gen import GenParams, write_tape
from streams.tape import replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args()

    config = load_config(args.config)
    params = GenParams(symbols=args.symbols, accounts=args.accounts, days=args.days, seed=args.seed)
    tape = Path("out/bench") / f"gen-{args.symbols}x{args.accounts}x{args.days}-{args.seed}.jsonl"
    tape.parent.mkdir(parents=True, exist_ok=True)
    if not tape.exists():
        with tape.open("wb") as sink:
            write_tape(params, sink, config)
    lines = tape.read_bytes().splitlines()

    started = time.perf_counter()
    for line in lines:
        orjson.loads(line)
    parse_s = time.perf_counter() - started

    started = time.perf_counter()
    replay(Engine(config), lines, io.BytesIO())
    replay_s = time.perf_counter() - started

    print(
        json.dumps(
            {
                "tape": str(tape),
                "events": len(lines),
                "parse_only_events_per_s": round(len(lines) / parse_s),
                "replay_events_per_s": round(len(lines) / replay_s),
                "replay_over_parse": round(parse_s / replay_s, 4),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
