"""Re-derive decisions and halts from the sequenced log and compare them with what was published (SPEC §7).

Each partition of `risk.sequenced` is a complete, ordered log for its accounts (bars and Level 2's notes
are copied to every partition), so `Rederiver` runs each partition through a fresh level chain of its own
(`streams.core.engine.partition_chain`, the object the worker's level chain runs), reading packets with
`decode_packet`, which validates every event again: an auditor does not trust the log. Outputs of several
partitions are merged by id (a `*` control is in every partition; its outputs name distinct accounts).

`Auditor` matches derived against recorded decisions and halts by id, in either arrival order, and keeps
only what is still unmatched plus (optionally bounded) the settled ids it needs to spot later copies:
a copy with the same content is a duplicate; one with other content (a tampered copy) a mismatch. A
derived output nobody published is missing, a published one nothing derives is extra. Each recorded
decision is also checked against its own facts (`streams.verify.check_facts`), each halt against the
rules (`check_halt`). Time is an argument (`now`): the shell decides how long to wait for a late copy.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from schemas.config import Config
from schemas.outputs import DeadLetterSource
from schemas.timefmt import format_ts, parse_ts
from streams.core.engine import Chain, partition_chain
from streams.core.items import Item, Output, item_for
from streams.core.levels.market.stage import MarketStage
from streams.tape import dead_letter, encode, read_events
from streams.topology import decode_packet, encode_item, pack, partition_for
from streams.verify import check_facts, check_halt, diff

AUDITED = ("decisions", "halts")
ID_FIELDS = {"decisions": "decision_id", "halts": "halt_id", "events": "event_id", "rebalance_runs": "run_id"}
LOG_TOPIC = "sequenced"
FINDING_KINDS = ("mismatch", "missing", "extra", "duplicate", "facts", "unreadable")


class AuditInputError(ValueError):
    """A recording that cannot be audited (the message says which line and why)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing that does not re-derive: its kind, the output's topic and id, and what differs."""

    kind: str
    topic: str
    ident: str
    account: str | None
    ts: str | None
    detail: str

    def text(self) -> str:
        where = ", ".join(part for part in (self.account and f"account {self.account}", self.ts) if part)
        return f"{self.kind}: {self.topic} {self.ident}" + (f" ({where})" if where else "") + f": {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "topic": self.topic,
            "id": self.ident,
            "account": self.account,
            "ts": self.ts,
            "detail": self.detail,
        }


class Rederiver:
    """Every partition of the sequenced log through a level chain of its own, from an empty state."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.chains: dict[int, Chain] = {}
        self.stats: Counter[str] = Counter()

    def feed(self, partition: int, raw: bytes) -> tuple[list[Output], str | None]:
        """The outputs of one record of partition `partition`, or none and why it is not a packet."""
        try:
            items = decode_packet(raw)
        except Exception as exc:  # whatever it is, it is not what our sequencer writes
            self.stats["unreadable"] += 1
            return [], f"not a sequenced packet: {type(exc).__name__}: {exc}"[:500]
        chain = self.chains.get(partition)
        if chain is None:
            chain = self.chains[partition] = partition_chain(self.config)
        outputs: list[Output] = []
        for item in items:
            result = chain.run([item], 0)
            outputs += result.outputs
            self.stats["level_failures"] += len(result.failures)
        self.stats["items"] += len(items)
        return outputs, None


def _canonical(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@dataclass(slots=True)
class _Pending:
    value: dict[str, Any]
    seen: float
    after: tuple[int, int] | None = None  # the sequenced (partition, offset) a recorded output says it came from


@dataclass
class Auditor:
    """Matches derived and recorded decisions and halts by id; returns findings as they become certain.

    `since` (epoch ms of event time): outputs of an earlier `ts` are not compared (the log is still
    re-derived from its start: state needs it). `remember`: how many settled ids to keep for spotting
    later copies (None: all of them, as a one-shot audit does; a following audit bounds its memory).
    """

    config: Config
    since: int | None = None
    remember: int | None = None
    check_own_facts: bool = True
    counts: Counter[str] = field(default_factory=Counter)
    derived_pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)
    recorded_pending: dict[tuple[str, str], list[_Pending]] = field(default_factory=dict)
    settled: OrderedDict[tuple[str, str], bytes] = field(default_factory=OrderedDict)
    positions: dict[int, int] = field(default_factory=dict)  # per partition: the next sequenced offset to derive

    def __post_init__(self) -> None:
        self._since = format_ts(self.since) if self.since is not None else None

    def _before_since(self, value: dict[str, Any]) -> bool:
        if self._since is None:
            return False
        ts = value.get("ts")
        try:
            return format_ts(parse_ts(ts)) < self._since
        except (ValueError, TypeError, OverflowError, OSError):
            return False  # an unreadable time is compared, never skipped

    def derived(self, topic: str, value: dict[str, Any], now: float) -> list[Finding]:
        """A re-derived output (first copy wins: the same output of two partitions is merged by id)."""
        if topic not in AUDITED or self._before_since(value):
            return []
        key = (topic, str(value.get(ID_FIELDS[topic])))
        if key in self.settled or key in self.derived_pending:
            self.counts["derived_merged"] += 1
            return []
        self.counts["derived"] += 1
        copies = self.recorded_pending.pop(key, None)
        if copies is None:
            self.derived_pending[key] = _Pending(value, now)
            return []
        self._settle(key, value)
        found = []
        for n, copy in enumerate(copies):
            found += self._compare(key, value, copy.value, first=n == 0)
        return found

    def recorded(self, topic: str, value: Any, now: float, after: tuple[int, int] | None = None) -> list[Finding]:
        """A published output, read from its topic; `after`: its source in the sequenced log, if it says."""
        if topic not in AUDITED:
            return []
        ident = value.get(ID_FIELDS[topic]) if isinstance(value, dict) else None
        if not isinstance(ident, str):
            self.counts["recorded"] += 1
            return [self.finding("unreadable", topic, "?", value, f"not a {topic[:-1]} with an id: {_short(value)}")]
        if self._before_since(value):
            return []
        self.counts["recorded"] += 1
        found = self._own_facts(topic, ident, value)
        key = (topic, ident)
        pending = self.derived_pending.pop(key, None)
        if pending is not None:
            self._settle(key, pending.value)
            return found + self._compare(key, pending.value, value, first=True)
        settled = self.settled.get(key)
        if settled is not None:
            return found + self._compare(key, orjson.loads(settled), value, first=False)
        self.recorded_pending.setdefault(key, []).append(_Pending(value, now, after))
        return found

    def rederived_upto(self, partition: int, offset: int) -> None:
        """The auditor has derived partition `partition` of the sequenced log up to (excluding) `offset`."""
        self.positions[partition] = offset

    def expire(
        self, now: float, grace: float, recorded_caught_up: bool = True, log_caught_up: bool = True
    ) -> list[Finding]:
        """Outputs unmatched for more than `grace`: derived ones are missing, recorded ones extra.

        Only while the auditor has read the output topics to their end (`recorded_caught_up`) is a
        derived output missing; a recorded one is extra only once the auditor has derived past the
        sequenced record it names (or, naming none, read the whole log: `log_caught_up`), so an
        auditor that is behind never blames the worker for its own lag.
        """
        found = []
        for key, pending in list(self.derived_pending.items()):
            if recorded_caught_up and now - pending.seen > grace:
                del self.derived_pending[key]
                found.append(self._missing(key, pending.value))
        for key, copies in list(self.recorded_pending.items()):
            first = copies[0]
            past = log_caught_up if first.after is None else self._derived_past(first.after)
            if now - first.seen > grace and past:
                del self.recorded_pending[key]
                found += self._extra(key, copies)
        return found

    def finish(self, ends: dict[int, int] | None = None) -> list[Finding]:
        """Everything still unmatched at the end of a one-shot audit; `ends`: the audited end of each partition.

        A recorded output whose source lies at or beyond the audited end came from records the audit
        did not read (the pipeline went on meanwhile): counted as `beyond`, not extra.
        """
        found = [self._missing(key, pending.value) for key, pending in self.derived_pending.items()]
        self.derived_pending.clear()
        for key, copies in self.recorded_pending.items():
            after = copies[0].after
            if after is not None and ends is not None and after[1] >= ends.get(after[0], 0):
                self.counts["beyond"] += len(copies)
                continue
            found += self._extra(key, copies)
        self.recorded_pending.clear()
        return found

    def _derived_past(self, after: tuple[int, int] | None) -> bool:
        return after is None or self.positions.get(after[0], 0) > after[1]

    def _settle(self, key: tuple[str, str], value: dict[str, Any]) -> None:
        self.settled[key] = _canonical(value)
        if self.remember is not None:
            while len(self.settled) > self.remember:
                self.settled.popitem(last=False)

    def _compare(
        self, key: tuple[str, str], derived: dict[str, Any], recorded: dict[str, Any], first: bool
    ) -> list[Finding]:
        topic, ident = key
        same = derived == recorded
        if same and first:
            self.counts["verified"] += 1
            self.counts[f"verified_{topic}"] += 1
            return []
        if same:
            return [self.finding("duplicate", topic, ident, recorded, "published more than once (same content)")]
        what = "differs from" if first else "a copy that differs from"
        return [
            self.finding("mismatch", topic, ident, recorded, f"{what} the re-derived one: {diff(recorded, derived)}")
        ]

    def _missing(self, key: tuple[str, str], value: dict[str, Any]) -> Finding:
        topic, ident = key
        return self.finding("missing", topic, ident, value, "re-derives from the sequenced log but was not published")

    def _extra(self, key: tuple[str, str], copies: list[_Pending]) -> list[Finding]:
        topic, ident = key
        return [
            self.finding("extra", topic, ident, copy.value, "published but does not re-derive from the sequenced log")
            for copy in copies
        ]

    def _own_facts(self, topic: str, ident: str, value: dict[str, Any]) -> list[Finding]:
        if not self.check_own_facts:
            return []
        problem = check_facts(value) if topic == "decisions" else check_halt(self.config, value)
        return [self.finding("facts", topic, ident, value, problem)] if problem else []

    def finding(self, kind: str, topic: str, ident: str, value: Any, detail: str) -> Finding:
        self.counts[kind] += 1
        account = value.get("account") if isinstance(value, dict) else None
        ts = value.get("ts") if isinstance(value, dict) else None
        return Finding(kind, topic, ident, str(account) if account is not None else None, _text(ts), detail)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _short(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass
class AuditReport:
    """What an audit found: the counts and the findings, and whether that is a pass."""

    counts: Counter[str]
    findings: list[Finding]
    allow_duplicates: bool = False

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not (self.allow_duplicates and f.kind == "duplicate")]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": dict(sorted(self.counts.items())),
            "findings": [f.to_json() for f in self.findings],
        }


def audit_log(
    config: Config,
    log: Iterable[tuple[int, int, bytes]],
    recorded: Iterable[tuple[str, dict[str, Any]]],
    since: int | None = None,
) -> AuditReport:
    """A one-shot audit in memory: `log` is (partition, offset, packet), `recorded` is (topic, value)."""
    rederiver = Rederiver(config)
    auditor = Auditor(config, since=since)
    findings: list[Finding] = []
    for topic, value in recorded:
        findings += auditor.recorded(topic, value, 0.0)
    for partition, offset, raw in log:
        findings += derive_record(rederiver, auditor, partition, offset, raw, 0.0)
    findings += auditor.finish()
    return AuditReport(auditor.counts, findings)


def derive_record(
    rederiver: Rederiver, auditor: Auditor, partition: int, offset: int, raw: bytes, now: float
) -> list[Finding]:
    """Re-derive one record of the sequenced log and match what it gives."""
    outputs, error = rederiver.feed(partition, raw)
    found: list[Finding] = []
    if error is not None:
        found.append(auditor.finding("unreadable", LOG_TOPIC, f"{partition}@{offset}", None, error))
    for output in outputs:
        if output.topic in AUDITED:
            found += auditor.derived(output.topic, output.value.model_dump(mode="json"), now)
    auditor.rederived_upto(partition, offset + 1)
    return found


# --------------------------------------------------------------------------- recordings of the sequenced log


def log_record(line: bytes, number: int) -> tuple[int, int, bytes] | None:
    """(partition, offset, packet bytes) of a line of a `riskguard record --topics sequenced` tape, None if blank."""
    stripped = line.strip()
    if not stripped:
        return None
    try:
        envelope = orjson.loads(stripped)
    except orjson.JSONDecodeError as exc:
        raise AuditInputError(f"line {number}: not JSON: {exc}") from None
    if not isinstance(envelope, dict) or envelope.get("topic") != LOG_TOPIC:
        topic = envelope.get("topic") if isinstance(envelope, dict) else None
        raise AuditInputError(
            f"line {number}: topic {topic!r} in a recording of the sequenced log: a tape is either input "
            "topics (bars, fills, ...) or the sequenced log, not both"
        )
    partition, offset = envelope.get("partition"), envelope.get("offset", number)
    if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
        raise AuditInputError(
            f"line {number}: a sequenced record without its partition (record it again with "
            "`riskguard record --topics sequenced`, which writes `partition` and `offset`)"
        )
    value = envelope.get("value")
    return partition, int(offset) if isinstance(offset, int) else number, orjson.dumps(value)


def is_log_recording(first_line: bytes) -> bool:
    """Whether a tape's first line is a record of the sequenced log (else: an input tape)."""
    try:
        envelope = orjson.loads(first_line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(envelope, dict) and envelope.get("topic") == LOG_TOPIC


def peek(lines: Iterable[bytes]) -> tuple[bytes | None, Iterator[bytes]]:
    """The first non-blank line of `lines` and an iterator over all of them, that line included."""
    iterator = iter(lines)
    skipped: list[bytes] = []
    for line in iterator:
        skipped.append(line)
        if line.strip():
            return line.strip(), _chain(skipped, iterator)
    return None, iter(skipped)


def _chain(head: list[bytes], tail: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from tail


def replay_log(config: Config, lines: Iterable[bytes], sink: IO[bytes]) -> int:
    """`riskguard replay` of a sequenced-log recording: each partition on its own, outputs merged by id.

    Outputs are written as their records come (in the recording's order); an output whose id was written
    already (the same output derived in another partition) is not written again. A record that is not a
    packet becomes a dead letter naming its partition and offset. Returns the number of records.
    """
    rederiver = Rederiver(config)
    written: set[str] = set()
    count = 0
    for number, line in enumerate(lines, start=1):
        record = log_record(line, number)
        if record is None:
            continue
        count += 1
        partition, offset, raw = record
        outputs, error = rederiver.feed(partition, raw)
        if error is not None:
            source = DeadLetterSource(topic=LOG_TOPIC, partition=partition, offset=offset)
            sink.write(encode(dead_letter(source, None, raw, error, format_ts(0))))
        for output in outputs:
            field_name = ID_FIELDS.get(output.topic)
            ident = getattr(output.value, field_name) if field_name else None
            if ident is not None:
                if ident in written:
                    continue
                written.add(ident)
            sink.write(encode(output))
    return count


def sequence_tape(config: Config, lines: Iterable[bytes], partitions: int, per_packet: int = 64) -> list[list[bytes]]:
    """The sequenced log a deployment writes for an input tape consumed in file order, per partition.

    Level 2 runs once per bar (the market agent) and its bars, notes and cluster maps go to every
    partition; account events go to their account's partition (`partition_for`, as the sequencer), `*`
    controls to every one. For tests and the benchmark: the sequencer itself is the worker's. Bad lines
    are left out (the sequencer dead-letters them).
    """
    market = MarketStage(config)
    logs: list[list[bytes]] = [[] for _ in range(partitions)]

    def send(items: list[Item]) -> None:
        for item in items:
            raw = encode_item(item)
            if item.account is None:
                for log in logs:
                    log.append(raw)
            else:
                logs[partition_for(item.account, partitions)].append(raw)

    for event in read_events(lines):
        if isinstance(event, tuple):
            continue
        item = item_for(event.topic, event.value)
        if item.kind == "bar":
            send(market.process(item)[1])
        else:
            send([item])
    send(market.finish()[1])
    return [
        [packet for start in range(0, len(log), per_packet) for packet in pack(log[start : start + per_packet])]
        for log in logs
    ]
