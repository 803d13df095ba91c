"""What the level chain writes to its tables per signal, in steady state (no broker: the worker's store path).

The worker stores, after each batch, the keys each level reports touched, skipping a value whose bytes
equal the stored one (`streams.worker.partitioned.PartitionedAgent._store`); every written value goes to
RocksDB and to the level's changelog topic, with its undo part (about twice its size). This runs the same
core (`Engine`, `Chain.run(..., touched)`, `DUMPERS`) over a long session with no fills, so that pending
decisions (5-minute TTL) and seen signal ids (up to 11,000 per account) reach their steady state, and
counts records and bytes written per level in the last `--measure` signals.

Usage: python -m bench.store_bytes [--accounts 4] [--symbols 50] [--signals-per-account 15000] [--batch 50]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from typing import Any

import orjson

from schemas.config import load_config
from schemas.inputs import Bar, Equity, Signal
from streams.core.engine import Engine
from streams.core.items import item_for
from streams.core.snapshot import DUMPERS

T0 = 1_704_205_800_000  # 2024-01-02 14:30 UTC


def session(accounts: int, symbols: int, per_account: int, seed: int) -> list[tuple[str, Any]]:
    """Equity once, then each second: a bar per symbol and 10 signals per account (unique ids, no fills)."""
    rng = random.Random(seed)
    names = [f"acct-{a:03d}" for a in range(accounts)]
    syms = [f"S{s:03d}" for s in range(symbols)]
    events: list[tuple[str, Any]] = [
        ("equity", Equity(account=n, ts=T0, equity=1_000_000.0, cash=1_000_000.0)) for n in names
    ]
    price = {s: 100.0 for s in syms}
    for second in range(per_account // 10):
        ts = T0 + 1000 * (second + 1)
        for s in syms:
            price[s] *= 1 + rng.uniform(-0.002, 0.002)
            p = round(price[s], 2)
            events.append(("bars", Bar(symbol=s, ts=ts, open=p, high=p, low=p, close=p, volume=1000.0)))
        for tick in range(10):
            for n in names:
                sig = Signal(
                    signal_id=f"{n}-{second:06d}-{tick}",
                    account=n,
                    symbol=rng.choice(syms),
                    ts=ts + tick * 50,
                    strategy="bench",
                    target_weight=round(rng.choice((-1, 1)) * rng.uniform(0.004, 0.04), 4),
                )
                events.append(("signals", sig))
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=4)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--signals-per-account", type=int, default=15_000)
    parser.add_argument("--batch", type=int, default=50, help="input events per stored batch")
    parser.add_argument("--measure", type=int, default=10_000, help="count the writes of the last N signals")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    config = load_config(None)
    engine = Engine(config)
    events = session(args.accounts, args.symbols, args.signals_per_account, args.seed)
    signals_total = sum(1 for topic, _ in events if topic == "signals")
    measure_from = signals_total - args.measure
    held: dict[tuple[str, str], bytes] = {}
    records: Counter[str] = Counter()
    written: Counter[str] = Counter()
    seen_signals = 0
    started = time.perf_counter()
    dump_s = 0.0
    for first in range(0, len(events), args.batch):
        touched: dict[str, set[str]] = {}
        batch = events[first : first + args.batch]
        for topic, event in batch:
            engine.chain.run([item_for(topic, event)], 0, touched)
        counting = seen_signals >= measure_from
        seen_signals += sum(1 for topic, _ in batch if topic == "signals")
        t = time.perf_counter()
        for level, keys in touched.items():
            if level == "market":
                continue  # Level 2 runs in the market agent, once per market: not the chain's writes
            stage = {"account": engine.account, "symbol": engine.symbol, "portfolio": engine.portfolio}[level]
            for key, value in DUMPERS[level](stage, keys).items():
                raw = value if isinstance(value, bytes) else orjson.dumps(value)
                if held.get((level, key)) == raw:
                    continue
                held[(level, key)] = raw
                if counting:
                    records[level] += 1
                    written[level] += len(raw)
        dump_s += time.perf_counter() - t
    elapsed = time.perf_counter() - started
    measured = args.measure
    out = {
        "signals": signals_total,
        "measured_signals": measured,
        "batch": args.batch,
        "accounts": args.accounts,
        "symbols": args.symbols,
        "records_per_signal": {k: round(v / measured, 3) for k, v in sorted(records.items())},
        "bytes_written_per_signal": {k: round(v / measured) for k, v in sorted(written.items())},
        "bytes_written_per_signal_total": round(sum(written.values()) / measured),
        "dump_seconds_share": round(dump_s / elapsed, 3),
        "seconds": round(elapsed, 1),
        "seen_signal_ids_per_account": max(len(b.seen_signals) for b in engine.symbol.books.values()),
        "pending_per_account": max(
            sum(len(p.pending) for p in b.positions.values()) for b in engine.portfolio.books.values()
        ),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
