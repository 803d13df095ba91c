"""`make bench`: every benchmark of docs/performance.md in one run; writes bench/results/latest.{json,md}.

Sections (each its own function, each bounded in time; pick some with `--only replay,latency`):

- replay    `riskguard replay` in-process on a `riskguard gen` tape (500 symbols x 50 accounts x 1 day),
            beside an orjson-parse-only loop over the same lines (the floor cost of reading the tape).
- real      the same two loops on the real S&P 500 daily bars of ../shared/data (`streams.demo.sp500_tape`).
- pipeline  one `riskguard worker` end to end through the broker: from the first input produced until
            the last decision is consumed; then a bare aiokafka consume -> orjson parse -> produce loop
            on the same events (bench/pipeline.py).
- latency   a worker under bars for 500 symbols every second and 1,000 signals/s (unique ids); a
            consumer on the decisions topic matches each decision to its signal by `source_id`:
            wall-clock latency from the signal's produce call to its decision's arrival.
- client    `streams.client.GuardClient.check()` at 20 signals/s (50 symbols ticking once a second): call ->
            decision returned, beside a raw consumer of the decisions topic timing the same signals
            (call -> arrival), so the client's own cost is the difference.
- scaling   `riskguard replay` of gen tapes of 500 symbols x 50 accounts x 1, 5 and 20 days and 500 accounts x
            1 day, each streamed from its file in a fresh process (bench/replay_scaling.py): events/s and peak RSS.
- clusters  `ClusterState` recompute for 500 symbols, window 30 (median of many timestamps).
- rss       VmRSS of a worker holding 500 symbols x 1,000 accounts of state.
- audit     `riskguard audit`'s throughput, decisions and halts verified per second: in memory on the
            sequenced log of a gen tape, and once through the broker (bench/audit.py).

The Kafka sections use KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:19092) when it answers, else start the
local broker (`streams.broker`) on that port and stop it at the end. Every deployment gets its own
topic prefix and app id and its topics are deleted afterwards, so a shared broker is fine.

Usage: python -m bench.run [--only replay,clusters] [--skip rss] [--quick] [--profile]
`--quick` is a smoke run on small sizes; it writes out/bench/quick.{json,md}, never bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py` as well as `python -m bench.run`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import orjson

from bench import pipeline as pl
from bench.flame import summarize
from schemas.config import Config, load_config
from streams.core.levels.market.clusters import ClusterParams, ClusterState
from streams.worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "out" / "bench"
SP500 = ROOT.parent / "shared" / "data" / "sp500_daily_2018-01-02_2018-02-07.csv"
SECTIONS = ("replay", "real", "scaling", "pipeline", "latency", "client", "clusters", "rss", "audit", "backtest")
KAFKA_SECTIONS = frozenset({"pipeline", "latency", "client", "rss", "audit"})
DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
SESSION_OPEN_MS = 1_704_205_800_000  # 2024-01-02 09:30 America/New_York, the first bar of the synthetic feeds

# The goals: (name, what is measured, top-level key or (numerator, denominator), "<=" or ">=", goal).
GOALS: tuple[tuple[str, str, str | tuple[str, str], str, float], ...] = (
    ("replay", "replay / parse-only", ("replay_events_per_s", "parse_only_events_per_s"), ">=", 0.2),
    ("pipeline", "pipeline / passthrough", ("pipeline_events_per_s", "passthrough_events_per_s"), ">=", 0.3),
    ("latency p50, light load", "ms, 20 signals/s, 50 symbols", "light_latency_ms_p50", "<=", 10.0),
    ("latency p99, light load", "ms, 20 signals/s, 50 symbols", "light_latency_ms_p99", "<=", 30.0),
    ("latency p99, 1,000 signals/s", "ms, 500 symbols ticking", "latency_ms_p99", "<=", 100.0),
    ("cluster recompute", "ms, 500 symbols, window 30", "cluster_recompute_ms_500", "<=", 5.0),
    ("worker RSS", "MiB, 500 symbols x 1,000 accounts", "worker_rss_mib_500x1000", "<=", 1024.0),
)
# The top-level keys each section sets (to carry the others over from the previous run with --only).
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "replay": ("replay_events_per_s", "parse_only_events_per_s"),
    "real": ("real_replay_events_per_s", "real_parse_only_events_per_s"),
    "scaling": ("scaling_events_per_s_20_over_1_day", "scaling_peak_rss_mib_20_over_1_day"),
    "pipeline": ("pipeline_events_per_s", "passthrough_events_per_s"),
    "latency": (
        "latency_ms_p50",
        "latency_ms_p99",
        "latency_ms_p50_is_lower_bound",
        "latency_ms_p99_is_lower_bound",
        "light_latency_ms_p50",
        "light_latency_ms_p99",
        "light_latency_ms_p50_is_lower_bound",
        "light_latency_ms_p99_is_lower_bound",
    ),
    "client": ("client_check_ms_p50", "client_check_ms_p99", "client_raw_ms_p50", "client_raw_ms_p99"),
    "clusters": ("cluster_recompute_ms_500",),
    "rss": ("worker_rss_mib_500x1000",),
    "audit": ("audit_core_decisions_per_s", "audit_kafka_decisions_per_s", "audit_core_events_per_s"),
    "backtest": ("backtest_frame_s_500x252", "backtest_frame_bars_per_s", "backtest_frame_lines_per_s"),
}


# --------------------------------------------------------------------------- pure helpers


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): the smallest value with at least q % of values at or below it."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(
    sent: dict[str, float], received: dict[str, float], since: float | None = None, until: float | None = None
) -> dict[str, Any]:
    """Latencies (ms) of the ids sent at or after `since`: count, missing, p50, p90, p99, max, mean.

    `sent` and `received` map a signal id to wall-clock seconds (its produce call, its decision's arrival);
    a received id that was never sent is ignored. With `until` (the end of the observation), an id never
    received counts with `until - sent`, a lower bound of its latency, and `pXX_lower_bound` says whether
    the percentile may be such a bound (then the true percentile is at least that). Without it, missing ids
    are only counted.
    """
    chosen = [sid for sid, at in sent.items() if since is None or at >= since]
    latencies = [(received[sid] - sent[sid]) * 1000.0 for sid in chosen if sid in received]
    bounds = [(until - sent[sid]) * 1000.0 for sid in chosen if sid not in received] if until is not None else []
    every = latencies + bounds
    smallest_bound = min(bounds, default=math.inf)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    summary: dict[str, Any] = {"count": len(latencies), "missing": len(chosen) - len(latencies)}
    for q in (50, 90, 99):
        value = percentile(every, q)
        summary[f"p{q}"] = rounded(value)
        if until is not None:
            summary[f"p{q}_lower_bound"] = value is not None and smallest_bound <= value
    summary["max"] = rounded(max(every, default=None))
    summary["mean_received"] = rounded(statistics.fmean(latencies) if latencies else None)
    return summary


def evaluate_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its measured value, the ratio measured / goal and whether it is met (None: not run)."""
    rows = []
    for name, unit, key, op, goal in GOALS:
        detail = ""
        measured: float | None
        if isinstance(key, tuple):
            num, den = results.get(key[0]), results.get(key[1])
            measured = num / den if isinstance(num, int | float) and isinstance(den, int | float) and den else None
            if measured is not None:
                detail = f"{_fmt(num)} / {_fmt(den)} events/s"
        else:
            value = results.get(key)
            measured = float(value) if isinstance(value, int | float) else None
            if measured is not None and results.get(f"{key}_is_lower_bound"):
                detail = "a lower bound: some signals got no decision while observed"
        ratio = measured / goal if measured is not None else None
        met = None if ratio is None else (ratio >= 1.0 if op == ">=" else ratio <= 1.0)
        rows.append(
            {
                "name": name,
                "unit": unit,
                "goal": f"{op} {_fmt(goal)}",
                "measured": None if measured is None else round(measured, 4),
                "detail": detail,
                "ratio_to_goal": None if ratio is None else round(ratio, 3),
                "met": met,
            }
        )
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{int(value):,}" if isinstance(value, int | float) else str(value)


def render_markdown(results: dict[str, Any]) -> str:
    """The goals table, the other figures and the run's context, as markdown."""
    context = results.get("context", {})
    lines = [
        f"# riskguard benchmark ({context.get('timestamp', '?')})",
        "",
        "| goal | unit | target | measured | ratio to target | met? |",
        "|---|---|---|---|---|---|",
    ]
    for row in results.get("goals") or evaluate_goals(results):
        met = {True: "yes", False: "**no**", None: "not run"}[row["met"]]
        measured = _fmt(row["measured"]) + (f" ({row['detail']})" if row["detail"] else "")
        ratio = _fmt(row["ratio_to_goal"])
        lines.append(f"| {row['name']} | {row['unit']} | {row['goal']} | {measured} | {ratio} | {met} |")
    skip = ("goals", "context", "sections")
    other = [k for k in sorted(results) if k not in skip and not isinstance(results[k], dict)]
    if other:
        lines += ["", "| figure | value |", "|---|---|"]
        lines += [f"| `{k}` | {_fmt(results[k])} |" for k in other]
    machine = context.get("machine", {})
    lines += [
        "",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs, {machine.get('mem_gib', '?')} GiB, "
        f"{machine.get('platform', '?')}, Python {machine.get('python', '?')}; "
        f"commit {context.get('commit', '?')}{' (dirty)' if context.get('dirty') else ''}; "
        f"batch window {context.get('batch_window_ms', '?')} ms, batch max {context.get('batch_max', '?')}, "
        f"fetch max wait {context.get('fetch_max_wait_ms', '?')} ms.",
    ]
    rows = results.get("sections", {}).get("scaling", {}).get("rows")
    if rows:
        lines += ["", *scaling_table(rows)]
    for name, section in sorted(results.get("sections", {}).items()):
        load = section.get("load_before")
        line = f"- {name}: {section.get('started', '?')}, {section.get('seconds', '?')} s, load before {load}"
        if section.get("tape"):
            line += f", tape {section['tape']}"
        if section.get("error"):
            line += f", **error**: {section['error']}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def scaling_table(rows: list[dict[str, Any]]) -> list[str]:
    """The scaling section's rows as a markdown table."""
    out = [
        "| symbols × accounts × days | lines | replay events/s | parse-only events/s | ratio | peak RSS MiB "
        "| RSS at start MiB | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = f"{r['symbols']} × {r['accounts']} × {r['days']}"
        if "skipped" in r:
            out.append(f"| {size} | | {r['skipped']} | | | | | |")
            continue
        lines = _fmt(r["lines"]) + ("" if r["replayed"] == r["lines"] else f" ({_fmt(r['replayed'])} replayed)")
        out.append(
            f"| {size} | {lines} | {_fmt(r['replay_events_per_s'])} | {_fmt(r['parse_only_events_per_s'])} "
            f"| {r['ratio']} | {r['peak_rss_mib']} | {r['rss_mib_start']} | {r['load']} |"
        )
    return out


def cluster_timing(
    symbols: int = 500,
    window: int = 30,
    runs: int = 200,
    method: str = "components",
    seed: int = 7,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Time `ClusterState`'s recompute (the bar that completes a timestamp) with a full window of returns.

    Returns come from a sector factor model like `riskguard gen`'s (11 sectors, names of one sector
    correlated at about 0.6): median, p90 and min over `runs` timestamps, in ms.
    """
    params = ClusterParams(window=window, min_periods=min(20, window), method=method)
    state = ClusterState(params)
    rng = np.random.default_rng(seed)
    names = [f"S{i:03d}" for i in range(symbols)]
    sector = np.arange(symbols) % 11
    price = np.full(symbols, 100.0)

    def closes() -> list[float]:
        nonlocal price
        common, sectors, own = rng.standard_normal(), rng.standard_normal(11), rng.standard_normal(symbols)
        shocks = 0.3 * common + 0.6 * sectors[sector] + 0.5 * own
        price = price * np.exp(0.002 * shocks)
        values: list[float] = price.round(4).tolist()
        return values

    ts = SESSION_OPEN_MS
    for _ in range(window + 1):
        ts += 60_000
        for name, close in zip(names, closes(), strict=True):
            state.on_bar(name, ts, close)
    times: list[float] = []
    clusters = 0
    for _ in range(runs):
        if deadline is not None and time.monotonic() > deadline and times:
            break
        ts += 60_000
        values = closes()
        started = time.perf_counter()
        cmap = state.on_bar(names[0], ts, values[0])  # completes the previous timestamp: the recompute
        times.append(time.perf_counter() - started)
        if cmap is not None:
            clusters = sum(1 for members in cmap.members.values() if len(members) > 1)
        for name, close in zip(names[1:], values[1:], strict=True):
            state.on_bar(name, ts, close)
    ms = sorted(t * 1000.0 for t in times)
    return {
        "symbols": symbols,
        "window": window,
        "method": method,
        "runs": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(percentile(ms, 90) or 0.0, 3),
        "min_ms": round(ms[0], 3),
        "clusters_of_two_or_more": clusters,
    }


def bounded(lines: Iterable[bytes], deadline: float) -> Iterator[bytes]:
    """`lines` until `deadline` (monotonic) has passed; checked every 1,000 lines."""
    for i, line in enumerate(lines):
        if i % 1000 == 0 and time.monotonic() > deadline:
            return
        yield line


def parse_only(lines: list[bytes], repeats: int = 3) -> float:
    """orjson-parse-only events/s: the best of `repeats` passes over `lines`."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for line in lines:
            orjson.loads(line)
        best = min(best, time.perf_counter() - started)
    return len(lines) / best


def replay_rate(lines: list[bytes], config: Config, deadline: float) -> tuple[float, int, int]:
    """`riskguard replay` events/s in-process; (rate, events replayed, outputs) (stops at `deadline`)."""
    from streams.core.engine import Engine
    from streams.tape import replay

    sink = io.BytesIO()
    started = time.perf_counter()
    count = replay(Engine(config), bounded(lines, deadline), sink)
    elapsed = time.perf_counter() - started
    return count / elapsed, count, sink.getvalue().count(b"\n")


# --------------------------------------------------------------------------- machine, broker, workers


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "mem_gib": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def git_state() -> tuple[str, bool]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        return commit, bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        return "?", False


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def kafka(bootstrap: str) -> Iterator[tuple[str, bool]]:
    """(bootstrap, started here): `bootstrap` when it answers, else the local broker started on its port."""
    from streams.broker import Broker, answers, down, up

    host, _, port_text = bootstrap.partition(":")
    port = int(port_text or 9092)
    if answers(host, port):
        yield bootstrap, False
        return
    if host not in ("127.0.0.1", "localhost") or answers("127.0.0.1", port + 1, timeout=0.2):
        port = _free_port()
        while answers("127.0.0.1", port + 1, timeout=0.2):
            port = _free_port()
    broker = Broker(port=port, controller_port=port + 1)
    print(f"bench: starting the local broker on {broker.bootstrap}", file=sys.stderr)
    up(broker, timeout=120)
    try:
        yield broker.bootstrap, True
    finally:
        print(f"bench: {down(broker)}", file=sys.stderr)


def rss_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = round(int(value.split()[0]) / 1024, 1)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def delete_topics(bootstrap: str, prefixes: tuple[str, ...]) -> int:
    """Delete the topics whose names start with one of `prefixes` (this run's deployments only)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if doomed:
            await admin.delete_topics(doomed)
        return len(doomed)
    finally:
        await admin.close()


async def topic_records(bootstrap: str, prefixes: tuple[str, ...]) -> dict[str, int]:
    """Records written so far to each topic whose name starts with one of `prefixes` (end - beginning
    offsets, summed over partitions): what a run cost the broker, by topic."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if t.startswith(prefixes))
        described = await admin.describe_topics(names) if names else []
    finally:
        await admin.close()
    tps = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d.get("partitions", ())]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        if not tps:
            return {}
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        counts: dict[str, int] = {}
        for tp in tps:
            counts[tp.topic] = counts.get(tp.topic, 0) + ends[tp] - starts[tp]
        return counts
    finally:
        await consumer.stop()


@dataclass
class Deployment:
    """One worker on its own topic prefix and app id; `close()` stops it and deletes what it made."""

    bootstrap: str
    workdir: Path
    partitions: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    worker: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def app_id(self) -> str:
        return f"rg-bench-{self.tag}"

    @property
    def prefix(self) -> str:
        return f"b{self.tag}."

    @property
    def config_path(self) -> Path:
        return self.workdir / f"bench-{self.tag}.yaml"

    def topics(self) -> Any:
        from streams.topology import Topics

        return Topics(prefix=self.prefix)

    def start(self) -> subprocess.Popen[bytes]:
        from streams.kafka_io import ensure_topics

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f"kafka: {{topic_prefix: '{self.prefix}', partitions: {self.partitions}}}\n", encoding="utf-8"
        )
        asyncio.run(ensure_topics(self.topics(), self.bootstrap, self.partitions))
        self.port = _free_port()
        self.worker = pl.start_worker(self.config_path, self.app_id, self.bootstrap, self.workdir, port=self.port)
        return self.worker

    def close(self) -> None:
        if self.worker is not None:
            stop_process(self.worker)
        with contextlib.suppress(Exception):
            asyncio.run(delete_topics(self.bootstrap, (self.prefix, self.app_id)))
        shutil.rmtree(self.workdir / "state" / self.app_id, ignore_errors=True)
        self.config_path.unlink(missing_ok=True)


class Profiler:
    """py-spy on a worker for `seconds` (raw, one frame per function, full file names)."""

    def __init__(self, pid: int, name: str, seconds: float) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        folder = WORK / "profiles"
        folder.mkdir(parents=True, exist_ok=True)
        self.seconds = max(1, int(seconds))
        self.raw = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.raw"
        argv = [exe, "record", "-f", "raw", "-F", "--full-filenames", "-r", "100", "-d", str(self.seconds)]
        self.process = subprocess.Popen(
            [*argv, "-p", str(pid), "-o", str(self.raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def finish(self) -> str | None:
        """Wait for py-spy, write the summary beside the raw file; returns the summary's path."""
        try:
            self.process.wait(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=10)
        if not self.raw.exists():
            return None
        summary = self.raw.with_suffix(".txt")
        summary.write_text(summarize(self.raw, 30, self.seconds), encoding="utf-8")
        return str(summary.relative_to(ROOT))


# --------------------------------------------------------------------------- sections


@dataclass
class Run:
    """What one `bench.run` invocation measures with."""

    quick: bool = False
    bootstrap: str = DEFAULT_BOOTSTRAP
    partitions: int = 4
    profile: bool = False
    latency_seconds: float = 25.0
    pipeline_tape: tuple[int, int, int] = (100, 20, 1)
    pipeline_limit: int | None = None
    seed: int = 7

    def budget(self, section: str) -> float:
        """Seconds a section may take (its deadline is checked inside its loops)."""
        full = {
            "replay": 300,
            "real": 120,
            "scaling": 900,
            "pipeline": 900,
            "latency": 300,
            "client": 150,
            "clusters": 120,
            "rss": 420,
            "audit": 300,
            "backtest": 300,
        }
        return full[section] / (4 if self.quick else 1)


def section_replay(run: Run) -> dict[str, Any]:
    """Replay vs orjson-parse-only on the same generated tape."""
    symbols, accounts, days = (50, 10, 1) if run.quick else (500, 50, 1)
    config = load_config(None)
    started = time.monotonic()
    lines = pl.tape_lines(symbols, accounts, days, run.seed, config)
    generated = time.monotonic() - started
    deadline = time.monotonic() + run.budget("replay")
    parse = parse_only(lines)
    rate, count, outputs = replay_rate(lines, config, deadline)
    return {
        "metrics": {"replay_events_per_s": round(rate), "parse_only_events_per_s": round(parse)},
        "tape": f"gen {symbols} symbols x {accounts} accounts x {days} day(s), seed {run.seed}",
        "events": len(lines),
        "replayed": count,
        "outputs": outputs,
        "truncated": count < len(lines),
        "tape_load_or_gen_s": round(generated, 1),
        "parse_only": "best of 3 passes",
    }


def section_real(run: Run) -> dict[str, Any]:
    """Replay vs orjson-parse-only on the real S&P 500 daily bars (3 equal-weight accounts)."""
    from streams.demo import sp500_tape

    if not SP500.exists():
        raise FileNotFoundError(f"{SP500} (../shared/data beside the project)")
    lines = list(sp500_tape(SP500))
    deadline = time.monotonic() + run.budget("real")
    parse = parse_only(lines)
    rate, count, outputs = replay_rate(lines, load_config(None), deadline)
    return {
        "metrics": {"real_replay_events_per_s": round(rate), "real_parse_only_events_per_s": round(parse)},
        "tape": f"{SP500.name} via streams.demo.sp500_tape (3 accounts)",
        "events": len(lines),
        "replayed": count,
        "outputs": outputs,
        "truncated": count < len(lines),
    }


SCALING_TAPES = ((500, 50, 1), (500, 50, 5), (500, 50, 20), (500, 500, 1))


def section_scaling(run: Run) -> dict[str, Any]:
    """Replay events/s and peak RSS along tape length (days) and accounts, each tape in a fresh process."""
    tapes = ((50, 10, 1), (50, 10, 3), (50, 100, 1)) if run.quick else SCALING_TAPES
    config = load_config(None)
    deadline = time.monotonic() + run.budget("scaling")
    rows: list[dict[str, Any]] = []
    for symbols, accounts, days in tapes:
        tape = pl.tape_path(symbols, accounts, days, run.seed, config)
        left = deadline - time.monotonic()
        if left < 10:
            rows.append({"symbols": symbols, "accounts": accounts, "days": days, "skipped": "out of time"})
            continue
        done = subprocess.run(
            [sys.executable, "-m", "bench.replay_scaling", str(tape), "--seconds", str(int(left))],
            cwd=ROOT,
            capture_output=True,
            check=True,
            text=True,
        )
        row = json.loads(done.stdout)
        with tape.open("rb") as handle:
            lines = sum(1 for line in handle if line.strip())
        row.update(symbols=symbols, accounts=accounts, days=days, lines=lines)
        rows.append(row)
    complete = [r for r in rows if "skipped" not in r and r["replayed"] == r["lines"]]
    by_size = {(r["accounts"], r["days"]): r for r in complete}
    longest = max((t for t in tapes if t[1] == tapes[0][1]), key=lambda t: t[2])  # same accounts, most days
    one, many = by_size.get((tapes[0][1], tapes[0][2])), by_size.get((longest[1], longest[2]))
    return {
        "metrics": {
            "scaling_events_per_s_20_over_1_day": (
                round(many["replay_events_per_s"] / one["replay_events_per_s"], 3) if one and many else None
            ),
            "scaling_peak_rss_mib_20_over_1_day": (
                round(many["peak_rss_mib"] / one["peak_rss_mib"], 3) if one and many else None
            ),
        },
        "rows": rows,
        "streamed": "each tape read line by line in a fresh process (bench/replay_scaling.py); parse-only "
        "is orjson over the same stream, after the replay",
    }


async def _consume_decisions(
    bootstrap: str,
    topic: str,
    on_records: Callable[[list[Any], float], None],
    until: Callable[[], bool],
    deadline: float,
    ready: asyncio.Event | None = None,
) -> None:
    """Consume `topic` from its beginning, handing each fetched batch and its arrival time to `on_records`."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    from streams.kafka_io import _partitions

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        for tp in parts:
            await consumer.position(tp)
        if ready is not None:
            ready.set()
        while not until() and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=50, max_records=5000)
            now = time.time()
            for records in batches.values():
                on_records(records, now)
    finally:
        await consumer.stop()


async def _pipeline_drive(lines: list[bytes], dep: Deployment, expected: int, deadline: float) -> dict[str, Any]:
    from streams.kafka_io import wait_drained

    topics = dep.topics()
    seen = {"decisions": 0, "last": 0.0}
    drained_at: dict[str, float] = {}

    def take(records: list[Any], now: float) -> None:
        if records:
            seen["decisions"] += len(records)
            seen["last"] = time.monotonic()

    def done() -> bool:
        if seen["decisions"] >= expected > 0:
            return True
        # Fewer decisions than the in-process replay: stop 3 s after the group drained with nothing new.
        return "at" in drained_at and time.monotonic() - max(drained_at["at"], seen["last"]) > 3.0

    ready = asyncio.Event()
    watcher = asyncio.create_task(
        _consume_decisions(dep.bootstrap, topics.name("decisions"), take, done, deadline, ready)
    )
    await ready.wait()
    started = await pl.produce(lines, topics, dep.bootstrap)
    produced = time.monotonic()
    drained = await wait_drained(
        topics, dep.bootstrap, dep.app_id, timeout=max(1.0, deadline - time.monotonic()), settle=0.0
    )
    drained_at["at"] = time.monotonic()
    await watcher
    records = await topic_records(dep.bootstrap, (dep.prefix, dep.app_id))
    # Every event through: the last decision consumed, or the group's commit of every input and internal
    # topic if that comes later (a tape's last decision may come well before its last bars are handled).
    end = max(seen["last"], drained_at["at"]) if drained else seen["last"] or drained_at["at"]
    return {
        "events": len(lines),
        "produce_s": round(produced - started, 2),
        "elapsed_s": round(end - started, 2),
        "pipeline_events_per_s": round(len(lines) / (end - started), 1),
        "drained": drained,
        "drained_events_per_s": round(len(lines) / (drained_at["at"] - started), 1),
        "decisions_consumed": seen["decisions"],
        "decisions_expected_by_replay": expected,
        "records_by_topic": records,
        "records_per_input": round(sum(records.values()) / max(len(lines), 1), 2),
    }


def section_pipeline(run: Run) -> dict[str, Any]:
    """One worker end to end (until the last decision is consumed), then the bare passthrough, same events."""
    symbols, accounts, days = (50, 10, 1) if run.quick else run.pipeline_tape
    limit = 3000 if run.quick else run.pipeline_limit
    config = load_config(None)
    lines = pl.tape_lines(symbols, accounts, days, run.seed, config)[:limit]
    expected = pl.expected_decisions(lines, config)
    deadline = time.monotonic() + run.budget("pipeline") * 2 / 3
    dep = Deployment(run.bootstrap, WORK / "pipeline", run.partitions)
    details: dict[str, Any] = {}
    try:
        worker = dep.start()
        details["worker_rss_mib_idle"] = rss_mib(worker.pid)["VmRSS"]
        spy = Profiler(worker.pid, "pipeline", 60) if run.profile else None
        cpu = cpu_seconds(worker.pid)
        result = asyncio.run(_pipeline_drive(lines, dep, expected, deadline))
        cpu = cpu_seconds(worker.pid) - cpu
        details["worker_cpu_s"] = round(cpu, 1)
        details["worker_cpu_us_per_event"] = round(cpu / len(lines) * 1e6)
        details["worker_rss_mib_after"] = rss_mib(worker.pid)["VmRSS"]
        if spy is not None:
            details["profile"] = spy.finish()
    finally:
        dep.close()
    tag = uuid.uuid4().hex[:8]
    try:
        passthrough = asyncio.run(
            pl._passthrough(lines, run.bootstrap, run.partitions, limit_s=run.budget("pipeline") / 3, tag=tag)
        )
    finally:
        with contextlib.suppress(Exception):
            asyncio.run(delete_topics(run.bootstrap, (f"p{tag}.",)))
    return {
        "metrics": {
            "pipeline_events_per_s": result.pop("pipeline_events_per_s"),
            "passthrough_events_per_s": passthrough["passthrough_events_per_s"],
        },
        "tape": f"gen {symbols} symbols x {accounts} accounts x {days} day(s), seed {run.seed}"
        + (f", first {limit} lines" if limit else ""),
        "partitions": run.partitions,
        **result,
        "passthrough_events": passthrough["passthrough_events"],
        **details,
    }


@dataclass
class LatencySpec:
    symbols: int = 500
    accounts: int = 100
    signals_per_s: int = 1000
    seconds: float = 25.0
    prefill: int = 31  # bar timestamps sent before the measured phase: a full cluster window
    ticks_per_s: int = 100
    seed: int = 7


def _envelope(topic: str, key: str, value: dict[str, Any]) -> bytes:
    return orjson.dumps({"topic": topic, "key": key, "value": value})


class _Market:
    """Random-walk closes of the latency and RSS feeds (deterministic)."""

    def __init__(self, symbols: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.names = [f"S{i:03d}" for i in range(symbols)]
        self.price = np.exp(self.rng.uniform(math.log(30.0), math.log(500.0), symbols))

    def bars(self, ts: int) -> list[dict[str, Any]]:
        open_ = self.price
        self.price = open_ * np.exp(0.002 * self.rng.standard_normal(open_.size))
        rows = []
        for name, o, c in zip(self.names, open_.round(2).tolist(), self.price.round(2).tolist(), strict=True):
            rows.append({"symbol": name, "ts": ts, "open": o, "high": max(o, c), "low": min(o, c), "close": c})
        return rows


@dataclass
class _Feed:
    """The latency feeds' market, random stream, accounts and their universes, after the prefill."""

    market: _Market
    rng: random.Random
    accounts: list[str]
    universe: dict[str, list[str]]
    events: int
    seconds: float


async def _prefilled(dep: Deployment, spec: LatencySpec, deadline: float, prefix: str) -> _Feed:
    """Equity for the spec's accounts and its prefill bar timestamps, produced and drained by the worker."""
    from streams.kafka_io import wait_drained

    market = _Market(spec.symbols, spec.seed)
    rng = random.Random(spec.seed)
    accounts = [f"{prefix}{i:03d}" for i in range(spec.accounts)]
    universe = {a: rng.sample(market.names, min(40, len(market.names))) for a in accounts}
    prefill = [_envelope("equity", a, {"account": a, "ts": SESSION_OPEN_MS, "equity": 1_000_000.0}) for a in accounts]
    for k in range(spec.prefill):
        prefill += [_envelope("bars", b["symbol"], b) for b in market.bars(SESSION_OPEN_MS + k * 1000)]
    began = time.monotonic()
    await pl.produce(prefill, dep.topics(), dep.bootstrap)
    await wait_drained(
        dep.topics(), dep.bootstrap, dep.app_id, timeout=max(1.0, deadline - time.monotonic()), settle=0.5
    )
    return _Feed(market, rng, accounts, universe, len(prefill), round(time.monotonic() - began, 1))


async def _latency_drive(dep: Deployment, spec: LatencySpec, deadline: float, profile: bool) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    topics = dep.topics()
    feed = await _prefilled(dep, spec, deadline, "L")
    market, rng, accounts, universe = feed.market, feed.rng, feed.accounts, feed.universe

    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    worker_sent: dict[str, float] = {}
    id_prefix = f"sig-{dep.tag}-"
    others = {"decisions": 0}

    def take(records: list[Any], now: float) -> None:
        for rec in records:
            value = orjson.loads(rec.value)
            sid = value.get("source_id", "")
            if value.get("origin") == "signal" and sid.startswith(id_prefix):
                received[sid] = now
                worker_sent[sid] = rec.timestamp / 1000.0
            else:
                others["decisions"] += 1

    finished: dict[str, float] = {}

    def done() -> bool:
        if "at" not in finished:
            return False
        return len(received) >= len(sent) or time.monotonic() - finished["at"] > 15.0

    ready = asyncio.Event()
    watcher = asyncio.create_task(
        _consume_decisions(dep.bootstrap, topics.name("decisions"), take, done, deadline + 20, ready)
    )
    await ready.wait()
    producer = AIOKafkaProducer(bootstrap_servers=dep.bootstrap, linger_ms=1, acks=1)
    await producer.start()
    spy = Profiler(dep.worker.pid, "latency", spec.seconds) if profile and dep.worker else None
    bars_sent = 0
    per_tick = spec.signals_per_s / spec.ticks_per_s
    owed = 0.0
    n = 0
    pid = dep.worker.pid if dep.worker is not None else None
    cpu = cpu_seconds(pid) if pid else 0.0
    begin = time.monotonic()
    wall_begin = time.time()
    try:
        second = 0
        while second < spec.seconds and time.monotonic() < deadline:
            bar_ts = SESSION_OPEN_MS + (spec.prefill + second) * 1000
            top = begin + second
            await asyncio.sleep(max(0.0, top - time.monotonic()))
            for bar in market.bars(bar_ts):
                await producer.send(topics.name("bars"), key=bar["symbol"].encode(), value=orjson.dumps(bar))
                bars_sent += 1
            for tick in range(spec.ticks_per_s):
                await asyncio.sleep(max(0.0, top + tick / spec.ticks_per_s - time.monotonic()))
                owed += per_tick
                while owed >= 1.0:
                    owed -= 1.0
                    account = accounts[n % len(accounts)]
                    sid = f"{id_prefix}{n:08d}"
                    n += 1
                    signal = {
                        "signal_id": sid,
                        "account": account,
                        "symbol": rng.choice(universe[account]),
                        "ts": bar_ts + tick * (1000 // spec.ticks_per_s),
                        "strategy": "bench",
                        "target_weight": round(rng.choice((-1, 1)) * rng.uniform(0.004, 0.04), 4),
                    }
                    sent[sid] = time.time()
                    await producer.send(topics.name("signals"), key=account.encode(), value=orjson.dumps(signal))
            second += 1
        await producer.flush()
    finally:
        produced_for = time.monotonic() - begin
        finished["at"] = time.monotonic()
        await producer.stop()
    await watcher
    until = time.time()
    busy = (cpu_seconds(pid) - cpu) / (time.monotonic() - begin) if pid else None
    records = await topic_records(dep.bootstrap, (dep.prefix, dep.app_id))
    profile = spy.finish() if spy is not None else None
    everything = latency_summary(sent, received, until=until)
    at_worker = latency_summary(sent, worker_sent, until=until)
    half = wall_begin + produced_for / 2
    first = latency_summary({k: v for k, v in sent.items() if v < half}, received, until=until)
    second_half = latency_summary(sent, received, since=half, until=until)
    return {
        "metrics": {
            "latency_ms_p50": everything["p50"],
            "latency_ms_p99": everything["p99"],
            "latency_ms_p50_is_lower_bound": everything["p50_lower_bound"],
            "latency_ms_p99_is_lower_bound": everything["p99_lower_bound"],
        },
        "latency_ms": everything,
        "latency_ms_to_worker_send": {k: at_worker[k] for k in ("p50", "p99", "max")},
        "latency_ms_p50_first_half": first["p50"],
        "latency_ms_p50_second_half": second_half["p50"],
        "latency_ms_p99_second_half": second_half["p99"],
        "signals_sent": len(sent),
        "bars_sent": bars_sent,
        "achieved_signals_per_s": round(len(sent) / produced_for, 1),
        "achieved_bars_per_s": round(bars_sent / produced_for, 1),
        "measured_s": round(produced_for, 1),
        "decisions_matched": len(received),
        "other_decisions": others["decisions"],
        "worker_cpu_share": None if busy is None else round(busy, 2),
        "worker_cpu_ms_per_signal": None if busy is None else round(busy * produced_for * 1000 / max(len(sent), 1), 3),
        "records_by_topic": records,  # prefill and light phase included: the whole deployment's life
        # every record of the deployment (inputs included) per input record: prefill, signals and bars
        "records_per_input": round(sum(records.values()) / max(len(sent) + bars_sent + feed.events, 1), 2),
        "prefill_events": feed.events,
        "prefill_s": feed.seconds,
        "profile": profile,
    }


def _latency_run(run: Run, spec: LatencySpec, budget: float, profile: bool) -> dict[str, Any]:
    deadline = time.monotonic() + budget
    dep = Deployment(run.bootstrap, WORK / "latency", run.partitions)
    try:
        worker = dep.start()
        result = asyncio.run(_latency_drive(dep, spec, deadline, profile))
        result["worker_rss_mib_after"] = rss_mib(worker.pid)["VmRSS"]
    finally:
        dep.close()
    result["tape"] = (
        f"{spec.symbols} symbols (a bar each per second, event time +1 s), {spec.accounts} accounts, "
        f"{spec.signals_per_s} signals/s in {spec.ticks_per_s} ticks, {spec.seconds:.0f} s after a prefill of "
        f"{spec.prefill} bar timestamps"
    )
    return result


LIGHT_LOAD = LatencySpec(symbols=50, accounts=20, signals_per_s=20, seconds=10.0, prefill=3)


def section_latency(run: Run) -> dict[str, Any]:
    """Signal produced -> its decision consumed, at 1,000 signals/s with bars for 500 symbols every second.

    Then the same at a light load (50 symbols, 20 signals/s): the floor the pipeline's hops set.
    """
    if run.quick:
        spec = LatencySpec(symbols=50, accounts=20, signals_per_s=100, seconds=5.0, prefill=3)
        return {**_latency_run(run, spec, run.budget("latency"), run.profile), "partitions": run.partitions}
    result = _latency_run(run, LatencySpec(seconds=run.latency_seconds), run.budget("latency") * 0.75, run.profile)
    light = _latency_run(run, LIGHT_LOAD, run.budget("latency") * 0.25, False)
    result["light_load"] = {
        k: light[k] for k in ("latency_ms", "latency_ms_to_worker_send", "achieved_signals_per_s", "tape") if k in light
    }
    result["metrics"].update({f"light_{key}": value for key, value in light["metrics"].items()})
    return {**result, "partitions": run.partitions}


CLIENT_LOAD = LatencySpec(symbols=50, accounts=20, signals_per_s=20, seconds=15.0, prefill=3)


async def _client_drive(dep: Deployment, spec: LatencySpec, deadline: float) -> dict[str, Any]:
    """`check()` at `spec.signals_per_s` (concurrent calls) while bars tick; a raw consumer times the same signals."""
    from aiokafka import AIOKafkaProducer

    from streams.client import GuardClient, is_local

    topics = dep.topics()
    feed = await _prefilled(dep, spec, deadline, "C")
    market, rng, accounts, universe = feed.market, feed.rng, feed.accounts, feed.universe

    id_prefix = f"cli-{dep.tag}-"
    sent: dict[str, float] = {}
    returned: dict[str, float] = {}
    raw: dict[str, float] = {}
    local = {"timeouts": 0}
    finished: dict[str, float] = {}

    def take(records: list[Any], now: float) -> None:
        for rec in records:
            sid = orjson.loads(rec.value).get("source_id", "")
            if sid.startswith(id_prefix):
                raw[sid] = now

    def done() -> bool:
        return "at" in finished and (len(raw) >= len(sent) or time.monotonic() - finished["at"] > 10.0)

    ready = asyncio.Event()
    watcher = asyncio.create_task(
        _consume_decisions(dep.bootstrap, topics.name("decisions"), take, done, deadline + 20, ready)
    )
    await ready.wait()
    n = 0

    def signal(account: str, ts: int, warm: bool = False) -> dict[str, Any]:
        nonlocal n
        n += 1
        return {
            "signal_id": f"{'warm-' if warm else id_prefix}{n:07d}",
            "account": account,
            "symbol": rng.choice(universe[account]),
            "ts": ts,
            "strategy": "bench",
            "target_weight": round(rng.choice((-1, 1)) * rng.uniform(0.004, 0.04), 4),
        }

    async def ask(client: GuardClient, value: dict[str, Any]) -> None:
        sent[value["signal_id"]] = time.time()
        decision = await client.check(value, timeout=5.0)
        returned[value["signal_id"]] = time.time()
        local["timeouts"] += is_local(decision)

    producer = AIOKafkaProducer(bootstrap_servers=dep.bootstrap, linger_ms=1, acks=1)
    await producer.start()
    began = time.monotonic()
    try:
        async with GuardClient(dep.bootstrap, dep.prefix, dep.partitions) as client:
            warm_ts = SESSION_OPEN_MS + spec.prefill * 1000 - 1
            await asyncio.gather(*(client.check(signal(a, warm_ts, warm=True), timeout=10.0) for a in accounts))
            calls: list[asyncio.Task[None]] = []
            begin = time.monotonic()
            second = 0
            while second < spec.seconds and time.monotonic() < deadline:
                bar_ts = SESSION_OPEN_MS + (spec.prefill + second) * 1000
                for bar in market.bars(bar_ts):
                    await producer.send(topics.name("bars"), key=bar["symbol"].encode(), value=orjson.dumps(bar))
                for k in range(spec.signals_per_s):
                    await asyncio.sleep(max(0.0, begin + second + k / spec.signals_per_s - time.monotonic()))
                    account = accounts[n % len(accounts)]
                    ts = bar_ts + k * (1000 // spec.signals_per_s)
                    calls.append(asyncio.create_task(ask(client, signal(account, ts))))
                second += 1
            await asyncio.gather(*calls)
    finally:
        finished["at"] = time.monotonic()
        await producer.stop()
    await watcher
    until = time.time()
    check = latency_summary(sent, returned, until=until)
    consumer = latency_summary(sent, raw, until=until)
    return {
        "metrics": {
            "client_check_ms_p50": check["p50"],
            "client_check_ms_p99": check["p99"],
            "client_raw_ms_p50": consumer["p50"],
            "client_raw_ms_p99": consumer["p99"],
        },
        "check_ms": check,
        "raw_consumer_ms": consumer,
        "fail_closed": local["timeouts"],
        "signals_sent": len(sent),
        "measured_s": round(finished["at"] - began, 1),
        "tape": f"{spec.symbols} symbols (a bar each per second), {spec.accounts} accounts, "
        f"{spec.signals_per_s} signals/s through GuardClient.check() for {spec.seconds:.0f} s",
    }


def section_client(run: Run) -> dict[str, Any]:
    """`GuardClient.check()` latency at light load, beside a raw consumer's on the same signals."""
    spec = CLIENT_LOAD if not run.quick else LatencySpec(symbols=20, accounts=8, signals_per_s=20, seconds=5, prefill=3)
    deadline = time.monotonic() + run.budget("client")
    dep = Deployment(run.bootstrap, WORK / "client", run.partitions)
    try:
        dep.start()
        result = asyncio.run(_client_drive(dep, spec, deadline))
    finally:
        dep.close()
    return {**result, "partitions": run.partitions}


def section_clusters(run: Run) -> dict[str, Any]:
    """`ClusterState` recompute, 500 symbols, window 30: components (the default) and both linkages."""
    symbols, runs = (100, 20) if run.quick else (500, 200)
    deadline = time.monotonic() + run.budget("clusters")
    by_method = {}
    for method in ("components", "average", "complete"):
        share = deadline if method == "complete" else time.monotonic() + run.budget("clusters") / 3
        by_method[method] = cluster_timing(symbols, 30, runs if method == "components" else runs // 2, method, 7, share)
    return {
        "metrics": {"cluster_recompute_ms_500": by_method["components"]["median_ms"]},
        "by_method": by_method,
        "what": "ClusterState.on_bar that completes a timestamp (returns row, correlation, clustering, map)",
    }


def rss_feed(symbols: int, accounts: int, timestamps: int, fills_per_account: int, seed: int = 7) -> list[bytes]:
    """Envelopes that give a worker state for every symbol and account: equity, fills, a signal, bars."""
    market = _Market(symbols, seed)
    rng = random.Random(seed)
    names = [f"R{i:04d}" for i in range(accounts)]
    lines = [_envelope("equity", a, {"account": a, "ts": SESSION_OPEN_MS, "equity": 1_000_000.0}) for a in names]
    first = market.bars(SESSION_OPEN_MS)
    lines += [_envelope("bars", b["symbol"], b) for b in first]
    close = {b["symbol"]: b["close"] for b in first}
    fill_no = 0
    for account in names:
        for symbol in rng.sample(market.names, min(fills_per_account, symbols)):
            fill_no += 1
            fill = {
                "fill_id": f"RF{fill_no:07d}",
                "account": account,
                "symbol": symbol,
                "side": rng.choice(("BUY", "SELL")),
                "qty": float(rng.randint(1, 100)),
                "price": close[symbol],
                "ts": SESSION_OPEN_MS,
            }
            lines.append(_envelope("fills", account, fill))
        symbol = rng.choice(market.names)
        signal = {"signal_id": f"RS-{account}", "account": account, "symbol": symbol, "ts": SESSION_OPEN_MS}
        lines.append(_envelope("signals", account, {**signal, "target_weight": 0.01}))
    for k in range(1, timestamps):
        lines += [_envelope("bars", b["symbol"], b) for b in market.bars(SESSION_OPEN_MS + k * 60_000)]
    return lines


def section_rss(run: Run) -> dict[str, Any]:
    """VmRSS of a worker holding 500 symbols x 1,000 accounts (equity, 3 fills and a signal each, 32 bar rows)."""
    from streams.kafka_io import wait_drained

    symbols, accounts, timestamps = (50, 50, 5) if run.quick else (500, 1000, 32)
    lines = rss_feed(symbols, accounts, timestamps, 3)
    deadline = time.monotonic() + run.budget("rss")
    dep = Deployment(run.bootstrap, WORK / "rss", run.partitions)
    try:
        worker = dep.start()
        idle = rss_mib(worker.pid)
        started = time.monotonic()
        asyncio.run(pl.produce(lines, dep.topics(), dep.bootstrap))
        drained = asyncio.run(
            wait_drained(
                dep.topics(), dep.bootstrap, dep.app_id, timeout=max(1.0, deadline - time.monotonic()), settle=1.0
            )
        )
        took = time.monotonic() - started
        time.sleep(2.0)
        held = rss_mib(worker.pid)
    finally:
        dep.close()
    return {
        "metrics": {"worker_rss_mib_500x1000": held["VmRSS"]},
        "worker_rss_mib_idle": idle["VmRSS"],
        "worker_peak_rss_mib": held["VmHWM"],
        "events": len(lines),
        "drained": drained,
        "feed_s": round(took, 1),
        "tape": f"{symbols} symbols x {accounts} accounts: equity, 3 fills and a signal per account, "
        f"bars for every symbol at {timestamps} timestamps",
    }


def section_audit(run: Run) -> dict[str, Any]:
    """`riskguard audit`: decisions and halts verified per second, in memory and through the broker."""
    from bench import audit

    symbols, accounts, days = (30, 6, 1) if run.quick else run.pipeline_tape
    config = load_config(None)
    lines = pl.tape_lines(symbols, accounts, days, run.seed, config)
    core = audit.core_rate(lines, config, run.partitions)
    dep = Deployment(run.bootstrap, WORK / "audit", run.partitions)
    try:
        via_kafka = audit.kafka_rate(lines, run.bootstrap, dep.prefix, run.partitions)
    finally:
        dep.close()
    return {
        "metrics": {
            "audit_core_decisions_per_s": round(core["rate"]),
            "audit_kafka_decisions_per_s": round(via_kafka["rate"]),
            # the tape's events whose sequenced log was re-derived per second: the rate above depends on the
            # tape's mix (a bar costs Levels 1, 3 and 4 in every partition and decides nothing by itself)
            "audit_core_events_per_s": round(len(lines) / core["seconds"]) if core["seconds"] else None,
        },
        "tape": f"gen {symbols} symbols x {accounts} accounts x {days} day(s), seed {run.seed}",
        "events": len(lines),
        "verified": core["verified"],
        "log_records": core["log_records"],
        "core_s": core["seconds"],
        "kafka_s": via_kafka["seconds"],
    }


def section_backtest(run: Run) -> dict[str, Any]:
    """The DataFrame API (streams.backtest.run_frame) on 500 symbols x one year of daily bars."""
    from bench.backtest_frame import measure

    return measure(*((100, 60) if run.quick else (500, 252)), seed=run.seed)


SECTION_FUNCTIONS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "replay": section_replay,
    "real": section_real,
    "scaling": section_scaling,
    "pipeline": section_pipeline,
    "latency": section_latency,
    "client": section_client,
    "clusters": section_clusters,
    "rss": section_rss,
    "audit": section_audit,
    "backtest": section_backtest,
}


# --------------------------------------------------------------------------- orchestration


def run_sections(names: list[str], run: Run) -> dict[str, dict[str, Any]]:
    """Run the named sections in order; a failing section records its error and the others go on."""
    done: dict[str, dict[str, Any]] = {}
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        info: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_before": load()}
        began = time.monotonic()
        try:
            info.update(SECTION_FUNCTIONS[name](run))
        except Exception as exc:  # a broken section must not lose the others' figures
            info["error"] = f"{type(exc).__name__}: {exc}"[:500]
        info["seconds"] = round(time.monotonic() - began, 1)
        info["load_after"] = load()
        print(f"bench: {name}: {json.dumps(info.get('metrics', info.get('error')))}", file=sys.stderr, flush=True)
        done[name] = info
    return done


def assemble(
    sections: dict[str, dict[str, Any]], previous: dict[str, Any] | None, context: dict[str, Any]
) -> dict[str, Any]:
    """The results document: this run's sections, with the other sections carried over from `previous`."""
    merged: dict[str, dict[str, Any]] = {}
    if previous:
        for name, info in previous.get("sections", {}).items():
            if name not in sections:
                merged[name] = {**info, "carried_over": True}  # `started` says when it was measured
    merged.update(sections)
    results: dict[str, Any] = {}
    for name in SECTIONS:
        info = merged.get(name)
        if info is None:
            continue
        metrics = info.get("metrics")
        if metrics is None and info.get("carried_over") and previous:
            metrics = {k: previous.get(k) for k in SECTION_KEYS[name]}
        results.update({k: v for k, v in (metrics or {}).items() if v is not None})
    results["goals"] = evaluate_goals(results)
    results["context"] = {**context, "tapes": {name: info["tape"] for name, info in merged.items() if info.get("tape")}}
    results["sections"] = {name: {k: v for k, v in info.items() if k != "metrics"} for name, info in merged.items()}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help=f"Comma-separated sections of {','.join(SECTIONS)}.")
    parser.add_argument("--skip", default="", help="Comma-separated sections to leave out.")
    parser.add_argument("--quick", action="store_true", help="Small sizes (smoke run); writes out/bench/quick.*")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker (pipeline, latency sections).")
    parser.add_argument("--fresh", action="store_true", help="Do not carry other sections over from latest.json.")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP))
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--latency-seconds", type=float, default=25.0)
    parser.add_argument("--pipeline-tape", default="100x20x1", help="symbols x accounts x days of the gen tape.")
    parser.add_argument("--pipeline-limit", type=int, default=None, help="Use only the first N lines of it.")
    parser.add_argument("--out", type=Path, default=None, help="Results stem (default bench/results/latest).")
    args = parser.parse_args(argv)

    def names(text: str) -> list[str]:
        chosen = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in SECTIONS]
        if unknown:
            parser.error(f"unknown section(s) {unknown}; choose from {SECTIONS}")
        return chosen

    only, skip = names(args.only), names(args.skip)
    selected = [n for n in SECTIONS if (not only or n in only) and n not in skip]
    symbols, accounts, days = (int(x) for x in args.pipeline_tape.split("x"))
    run = Run(
        quick=args.quick,
        bootstrap=args.bootstrap,
        partitions=args.partitions,
        profile=args.profile,
        latency_seconds=args.latency_seconds,
        pipeline_tape=(symbols, accounts, days),
        pipeline_limit=args.pipeline_limit,
    )
    stem = args.out or (WORK / "quick" if args.quick else RESULTS / "latest")
    stem.parent.mkdir(parents=True, exist_ok=True)
    commit, dirty = git_state()
    context: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "profiled": args.profile,
        "sections_run": selected,
        "machine": machine(),
        "commit": commit,
        "dirty": dirty,
        "load_at_start": load(),
        "batch_window_ms": float(os.environ.get("RISKGUARD_BATCH_WINDOW_MS", WorkerSettings.batch_window_ms)),
        "batch_max": int(os.environ.get("RISKGUARD_BATCH_MAX", WorkerSettings.batch_max)),
        "fetch_max_wait_ms": int(os.environ.get("RISKGUARD_FETCH_MAX_WAIT_MS", WorkerSettings.fetch_max_wait_ms)),
        "partitions": args.partitions,
    }
    with contextlib.ExitStack() as stack:
        if KAFKA_SECTIONS.intersection(selected):
            run.bootstrap, started = stack.enter_context(kafka(run.bootstrap))
            context["broker"] = {"bootstrap": run.bootstrap, "started_by_bench": started}
        sections = run_sections(selected, run)
    context["load_at_end"] = load()
    previous = None
    json_path = stem.with_suffix(".json")
    if not args.fresh and not args.quick and json_path.exists():
        with contextlib.suppress(ValueError):
            previous = json.loads(json_path.read_text(encoding="utf-8"))
    results = assemble(sections, previous, context)
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(render_markdown(results), encoding="utf-8")
    print(render_markdown(results))
    print(f"bench: wrote {json_path} and {stem.with_suffix('.md')}", file=sys.stderr)
    return 1 if any("error" in info for info in sections.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
