"""Tapes (SPEC §3): JSON Lines of `{"topic", "key", "value"}` envelopes, in and out.

Bad lines never stop a replay: each becomes a DeadLetter output with its line number and error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson
from pydantic import ValidationError

from schemas.base import InputModel
from schemas.inputs import INPUT_MODELS
from schemas.outputs import DeadLetter, DeadLetterSource, RiskEvent
from schemas.timefmt import format_ts
from streams.core.engine import Engine, Output
from streams.core.ids import stable_id

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_RAW_CHARS = 64 * 1024

INPUT_TOPICS = tuple(INPUT_MODELS)
OUTPUT_TOPICS = ("decisions", "halts", "events", "rebalance_runs", "deadletter")


@dataclass(frozen=True, slots=True)
class TapeEvent:
    """One valid input line."""

    line: int
    topic: str
    key: str | None
    value: InputModel


class BadMessage(ValueError):
    """A message that is not a valid envelope or value."""


class SecurityRefusal(BadMessage):
    """A control message refused for its signature: dead-lettered and raised as a `security` event."""


ControlCheck = Callable[[dict[str, Any]], str | None]


def validation_summary(exc: ValidationError) -> str:
    """A one-line, readable summary of a pydantic validation error."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def decode_value(topic: str, value: Any, control_check: ControlCheck | None = None) -> InputModel:
    """Validate one input value of a logical topic into its model (controls: signature first)."""
    model = INPUT_MODELS.get(topic)
    if model is None:
        raise BadMessage(f"unknown input topic {topic!r} (expected one of {', '.join(INPUT_TOPICS)})")
    if not isinstance(value, dict):
        raise BadMessage(f"{topic} value must be a JSON object")
    try:
        # The model's validator itself: `model_validate` adds only a call layer, once per line of a tape.
        parsed: InputModel = model.__pydantic_validator__.validate_python(value)
    except ValidationError as exc:
        raise BadMessage(f"invalid {topic} value: {validation_summary(exc)}") from None
    if topic == "control" and control_check is not None:
        refusal = control_check(value)  # on the raw value: the signature covers the bytes as sent
        if refusal is not None:
            raise SecurityRefusal(f"security: {refusal}")
    return parsed


def load_json(raw: bytes) -> Any:
    """Parse one message's bytes: at most 1 MiB, valid JSON (SPEC §8), else BadMessage."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message of {len(raw)} bytes exceeds the 1 MiB limit")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadMessage(f"not JSON: {exc}") from None


def decode_line(raw: bytes, control_check: ControlCheck | None = None) -> tuple[str, str | None, InputModel]:
    """Parse and validate one tape line into (topic, key, value)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message of {len(raw)} bytes exceeds the 1 MiB limit")
    try:
        envelope = orjson.loads(raw)  # `load_json`, inlined: once per line
    except orjson.JSONDecodeError as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(envelope, dict) or "topic" not in envelope or "value" not in envelope:
        raise BadMessage('not an envelope: expected {"topic", "key", "value"}')
    topic, key = envelope["topic"], envelope.get("key")
    if not isinstance(topic, str):
        raise BadMessage("envelope topic must be a string")
    if key is not None and not isinstance(key, str):
        raise BadMessage("envelope key must be a string or null")
    return topic, key, decode_value(topic, envelope["value"], control_check)


def dead_letter(source: DeadLetterSource, key: str | None, raw: bytes | str, error: str, ts: str) -> Output:
    """A DeadLetter output keeping at most 64 KiB of the raw text."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    return Output(
        "deadletter",
        key,
        DeadLetter(source=source, key=key, raw=text[:MAX_RAW_CHARS], error=error, ts=ts),
    )


def raw_value(raw: bytes) -> dict[str, Any]:
    """The value of a raw envelope line, or {} when there is none."""
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    value = envelope.get("value") if isinstance(envelope, dict) else None
    return value if isinstance(value, dict) else {}


def security_event(value: dict[str, Any], error: str, clock: int) -> Output:
    """A `security` RiskEvent for a refused control (SPEC §8)."""
    account = value.get("account") if isinstance(value.get("account"), str) else None
    details: dict[str, Any] = {k: value.get(k) for k in ("command", "issued_by", "nonce", "expires_at") if k in value}
    details["error"] = error
    event = RiskEvent(
        event_id=stable_id("evt", "security", account, value.get("nonce"), error),
        kind="security",
        account=account,
        ts=clock,
        details=details,
    )
    return Output("events", account, event)


def _guess_key(raw: bytes) -> str | None:
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    key = envelope.get("key") if isinstance(envelope, dict) else None
    return key if isinstance(key, str) else None


def read_events(
    lines: Iterable[bytes], control_check: ControlCheck | None = None
) -> Iterator[TapeEvent | tuple[int, bytes, str, bool]]:
    """Yield valid events, or (line number, raw, error, is a security refusal) for each bad line."""
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not stripped:
            continue
        try:
            topic, key, value = decode_line(stripped, control_check)
        except BadMessage as exc:
            yield number, stripped, str(exc), isinstance(exc, SecurityRefusal)
            continue
        yield TapeEvent(number, topic, key, value)


def _item_text(event: TapeEvent) -> str:
    """The envelope of a line that a level failed on, as its dead letter keeps it."""
    value = event.value.model_dump(mode="json")
    return orjson.dumps({"topic": event.topic, "key": event.key, "value": value}).decode()


def encode(output: Output) -> bytes:
    """One output envelope as a JSON line (deterministic bytes)."""
    return (
        orjson.dumps({"topic": output.topic, "key": output.key, "value": output.value.model_dump(mode="json")}) + b"\n"
    )


def replay(
    engine: Engine,
    lines: Iterable[bytes],
    sink: IO[bytes],
    on_output: Callable[[Output], None] | None = None,
) -> int:
    """Run a tape through the engine, writing every output; returns the number of input lines."""
    count = 0
    last_ts = 0
    check = engine.control_check
    process = engine.process
    write = sink.write
    # `read_events`, unrolled: this loop runs once per line of tapes of millions of lines.
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not stripped:
            continue
        count += 1
        try:
            topic, key, value = decode_line(stripped, check)
        except BadMessage as exc:
            error = str(exc)
            engine.count("dead_letters")
            # Event time of the last good line: keeps replays byte-identical (the worker uses wall clock).
            source = DeadLetterSource(line=number)
            outputs = [dead_letter(source, _guess_key(stripped), stripped, error, format_ts(last_ts))]
            if isinstance(exc, SecurityRefusal):
                outputs.append(security_event(raw_value(stripped), error, last_ts))
        else:
            last_ts = value.ts  # type: ignore[attr-defined]  # every input model has its event time (`ts`)
            outputs = process(topic, value)
            if engine.failures:
                item = TapeEvent(number, topic, key, value)
                for failure in engine.take_failures():
                    engine.count("dead_letters")
                    source = DeadLetterSource(line=number)
                    outputs.append(dead_letter(source, key, _item_text(item), failure.error, format_ts(last_ts)))
        for output in outputs:
            write(encode(output))
            if on_output is not None:
                on_output(output)
    finished = engine.finish()
    for failure in engine.take_failures():
        engine.count("dead_letters")
        finished.append(dead_letter(DeadLetterSource(), None, "", failure.error, format_ts(last_ts)))
    for output in finished:
        sink.write(encode(output))
        if on_output is not None:
            on_output(output)
    return count


def read_outputs(lines: Iterable[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, envelope) of an output tape; blank lines are skipped."""
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if stripped:
            envelope = orjson.loads(stripped)
            if isinstance(envelope, dict):
                yield number, envelope
