"""JSON-lines logs for the worker (SPEC §8, §9; seed 001 §Telemetry "Structured Logging").

One format for every line: structlog's own events and the stdlib loggers of faust, mode and aiokafka all
pass through `structlog.stdlib.ProcessorFormatter` and come out as one JSON object per line with
`timestamp` (ISO 8601 UTC, wall clock), `level`, `logger` and `event` first. A decision is one
`policy_decision` line carrying the seed's telemetry fields; the decision's own event time is `ts`,
because `timestamp` is the time of the log line.

Secrets never appear (SPEC §8): values under sensitive key names are masked, and the values of
sensitive environment variables (`RISKGUARD_CONTROL_KEY`, Kafka SASL passwords, ...) are masked wherever
they occur in a line. A line that would still contain one after masking is replaced by a notice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.typing import EventDict, Processor

from schemas.outputs import Action, DeadLetter, Decision, Halt, RebalanceRun, RiskEvent, TradingState
from schemas.timefmt import format_ts
from streams.core.items import Output

__all__ = [
    "MASK",
    "configure_logging",
    "env_secrets",
    "halt_fields",
    "is_sensitive_key",
    "log_output",
    "policy_decision_fields",
    "redact",
]

MASK = "***"
CONTROL_KEY_ENV = "RISKGUARD_CONTROL_KEY"
_FIRST = ("timestamp", "level", "logger", "event")
_MIN_ENV_SECRET = 6  # shorter values of *_PASSWORD-like variables would mask ordinary words everywhere

# Key names whose values are secrets. `key` alone is a Kafka message key (an account id), not a secret;
# `*_key` (control_key, api_key, secret_key, ...) is.
_SENSITIVE = re.compile(r"password|passwd|secret|token|signature|credential|sasl|_key$", re.IGNORECASE)
_SENSITIVE_ENV = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|SASL_|CREDENTIAL|_KEY$", re.IGNORECASE)
_OWN_ENV = ("RISKGUARD_", "KAFKA_")
_NOT_SECRET_ENV = re.compile(r"SASL_MECHANISM|SASL_USERNAME|SASL_USER$|SECURITY_PROTOCOL", re.IGNORECASE)


class _Logger(Protocol):
    def info(self, event: str, **kw: Any) -> Any: ...

    def warning(self, event: str, **kw: Any) -> Any: ...


def is_sensitive_key(name: str) -> bool:
    """Whether a field name holds a secret (control_key, *_password, sasl_*, signature, tokens, ...)."""
    return bool(_SENSITIVE.search(name))


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Secrets in the environment: the control key, RISKGUARD_*/KAFKA_* passwords, *_PASSWORD_FILE contents."""
    env = os.environ if environ is None else environ
    found = {env[CONTROL_KEY_ENV]} if env.get(CONTROL_KEY_ENV) else set()
    for name, value in env.items():
        if not name.upper().startswith(_OWN_ENV):
            continue  # other programs' variables (GPG_KEY, ...) are not ours to log, nor to mask
        if name.upper().endswith("_PASSWORD_FILE"):
            value = _first_line(value)  # e.g. RISKGUARD_KAFKA_PASSWORD_FILE: the secret is inside
        elif name.upper().endswith("_FILE") or _NOT_SECRET_ENV.search(name) or not _SENSITIVE_ENV.search(name):
            continue
        if len(value) >= _MIN_ENV_SECRET:
            found.add(value)
    return sorted(found, key=len, reverse=True)  # longest first: a secret containing another is masked whole


def _first_line(path: str) -> str:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return ""
    return lines[0] if lines else ""


class _Redactor:
    """structlog processor: mask sensitive keys and known secret values, at any depth.

    It runs on every line (a decision line has ~30 fields), so the common cases are short: a key's
    sensitivity is looked up once per key name, and with no secret values to look for, scalars pass
    untouched.
    """

    _KEYS_CACHED = 4096  # distinct key names remembered (field names are few; a bound all the same)

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in secrets if s]
        self._sensitive: dict[str, bool] = {}

    def __call__(self, logger: Any, method: str, event_dict: EventDict) -> EventDict:
        return self._mapping(event_dict)

    def _is_sensitive(self, key: str) -> bool:
        known = self._sensitive.get(key)
        if known is None:
            known = is_sensitive_key(key)
            if len(self._sensitive) < self._KEYS_CACHED:
                self._sensitive[key] = known
        return known

    def _mapping(self, mapping: Mapping[Any, Any]) -> dict[Any, Any]:
        secrets = self.secrets
        out: dict[Any, Any] = {}
        for key, value in mapping.items():
            if isinstance(key, str):
                if value is not None and self._is_sensitive(key):
                    out[self._text(key) if secrets else key] = MASK
                    continue
                if secrets:
                    key = self._text(key)
            kind = type(value)
            if not secrets and (value is None or kind is str or kind is float or kind is int or kind is bool):
                out[key] = value  # the common case: nothing to look for in a scalar
            else:
                out[key] = self._value(value)
        return out

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, bytes):
            return self._text(value.decode("utf-8", errors="replace"))
        if isinstance(value, Mapping):
            return self._mapping(value)
        if isinstance(value, list | tuple | set | frozenset):
            return [self._value(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            if self.secrets and any(s in str(value) for s in self.secrets):
                return MASK
            return value
        text = repr(value)  # what the renderer would write for an unknown object
        return self._text(text) if any(s in text for s in self.secrets) else value

    def _text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


def redact(secrets: Iterable[str] = ()) -> Processor:
    """A processor masking sensitive keys and the given secret values (see `env_secrets`)."""
    return _Redactor(secrets)


def _first_keys(logger: Any, method: str, event_dict: EventDict) -> EventDict:
    ordered = {k: event_dict[k] for k in _FIRST if k in event_dict}
    ordered.update((k, v) for k, v in event_dict.items() if k not in ordered)
    return ordered


class _LineGuard:
    """Last processor: the rendered line must not contain a secret in any JSON spelling."""

    def __init__(self, secrets: Iterable[str]) -> None:
        spellings = {json.dumps(s)[1:-1] for s in secrets if s} | {s for s in secrets if s}
        self.spellings = sorted(spellings, key=len, reverse=True)

    def __call__(self, logger: Any, method: str, line: str) -> str:
        if not any(s in line for s in self.spellings):
            return line
        return json.dumps({"level": method, "event": "log_line_redacted", "reason": "secret in rendered line"})


def _json_line(event_dict: EventDict, **_: Any) -> str:
    """One JSON object per line (orjson: several times faster than `json` on a decision line)."""
    return orjson.dumps(event_dict, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _render(secrets: list[str]) -> list[Processor]:
    return [
        ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        _Redactor(secrets),
        _first_keys,
        structlog.processors.JSONRenderer(serializer=_json_line),
        _LineGuard(secrets),  # type: ignore[list-item]  # receives the rendered string
    ]


def configure_logging(
    level: str | int = "INFO", stream: IO[str] | None = None, secrets: Iterable[str] = ()
) -> logging.Handler:
    """Send structlog and the stdlib root logger (faust, mode, aiokafka) as JSON lines to `stream`.

    Replaces the root logger's handlers; returns the one it installs. `secrets` adds values to mask
    beside those found in the environment now.
    """
    out = stream if stream is not None else sys.stdout
    masked = sorted(set(env_secrets()) | {s for s in secrets if s}, key=len, reverse=True)
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level: {level!r}")
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(ProcessorFormatter(foreign_pre_chain=shared, processors=_render(masked)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    global _fast_lines
    _fast_lines = _FastLines(handler, masked)
    return handler


class _FastLines:
    """The one line per decision, written straight to the handler's stream, in the same format.

    A decision line through structlog's stdlib bridge (bound logger, `LogRecord`, handler, formatter,
    generic masking) cost ~90 µs, a tenth of the worker's CPU at 1,000 decisions/s. Its field names are
    fixed and none is sensitive, so only a secret value inside a field could need masking: the line is
    composed and rendered directly (~15 µs), and if it contains a secret in any JSON spelling (it
    never should), or the handler was replaced, the generic path logs it instead and masks it there.
    """

    def __init__(self, handler: logging.StreamHandler[Any], secrets: Iterable[str]) -> None:
        self.handler = handler
        self.spellings = _LineGuard(secrets).spellings
        self.unflushed = False

    def emit(self, logger: Any, event: str, fields: dict[str, Any]) -> bool:
        """Write one info line for `logger`; False when this path does not apply (then log it normally)."""
        name = getattr(logger, "name", None)
        root = logging.getLogger()
        if not isinstance(name, str) or root.handlers != [self.handler] or root.filters or self.handler.filters:
            return False  # another handler or a filter is in the way: only the bridge honours them all
        target = logging.getLogger(name)
        if target.handlers or target.filters or not target.propagate:
            return False
        if not target.isEnabledFor(logging.INFO):
            return True  # filtered out, as the bridge would
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        line = _json_line({"timestamp": stamp, "level": "info", "logger": name, "event": event, **fields})
        if any(s in line for s in self.spellings):
            return False
        with self.handler.lock or contextlib.nullcontext():
            self.handler.stream.write(line + "\n")
            self.unflushed = True  # flushed once per batch (`flush_decision_lines`), not per line
        return True

    def flush(self) -> None:
        if self.unflushed:
            self.unflushed = False
            self.handler.flush()


_fast_lines: _FastLines | None = None


def flush_decision_lines() -> None:
    """Write out the decision lines buffered since the last call (the worker calls it after each batch:
    one write for a batch's lines instead of a write and flush per line, ~4 % of the worker at 1,000
    decisions/s). Any other log line flushes them too, in order: they share the handler's stream."""
    if _fast_lines is not None:
        _fast_lines.flush()


def _signed_qty(decision: Decision) -> float:
    if decision.action not in (Action.ALLOW, Action.CLIP) or decision.side is None:
        return 0.0
    return decision.qty if decision.side.value == "BUY" else -decision.qty


def _number(facts: Mapping[str, Any], name: str) -> float | None:
    value = facts.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def policy_decision_fields(decision: Decision) -> dict[str, Any]:
    """Seed 001's telemetry fields of one decision, plus the ids and quantities an auditor joins on."""
    facts = decision.facts
    qty_delta = _signed_qty(decision)
    filled, pending = _number(facts, "filled_qty"), _number(facts, "pending_qty")
    current_val = (filled + (pending or 0.0)) * decision.price if filled is not None else None
    band = facts.get("band")
    clip_ratio = (
        decision.qty / decision.requested_qty if decision.action is Action.CLIP and decision.requested_qty > 0 else None
    )
    return {
        "ts": format_ts(decision.ts),
        "decision_id": decision.decision_id,
        "account": decision.account,
        "symbol": decision.symbol,
        "origin": decision.origin.value,
        "source_id": decision.source_id,
        "action": decision.action.value,
        "side": decision.side.value if decision.side is not None else None,
        "qty_delta": qty_delta,
        "qty": decision.qty,
        "requested_qty": decision.requested_qty,
        "clip_ratio": clip_ratio,
        "price": decision.price,
        "notional": decision.notional,
        "reason": decision.reason,
        "layer": decision.layer.value,
        "clips": [[c.layer.value, c.reason, c.before, c.after] for c in decision.clips],
        "mode": decision.mode.value,
        "config_version": decision.config_version,
        "metadata": {
            "current_val": current_val,
            "target_val": current_val + qty_delta * decision.price if current_val is not None else None,
            "band_pct": _number(facts, "band_pct"),
            "band": list(band) if isinstance(band, list | tuple) else None,
            "requested_target": _number(facts, "requested_target"),
            "equity": _number(facts, "equity"),
            "trading_state": facts.get("trading_state"),
        },
    }


def halt_fields(halt: Halt) -> dict[str, Any]:
    """The fields of a `halt` line: the state change and the account figures behind it."""
    return {
        "ts": format_ts(halt.ts),
        "halt_id": halt.halt_id,
        "account": halt.account,
        "state": halt.state.value,
        "previous_state": halt.previous_state.value,
        "reason": halt.reason,
        "until": format_ts(halt.until) if halt.until is not None else None,
        "facts": halt.facts.model_dump(),
    }


def log_output(logger: _Logger, output: Output) -> None:
    """Log one output: `policy_decision`, `halt` (warning unless back to ACTIVE), `risk_event`, ..."""
    value = output.value
    if isinstance(value, Decision):
        fields = policy_decision_fields(value)
        if _fast_lines is None or not _fast_lines.emit(logger, "policy_decision", fields):
            logger.info("policy_decision", **fields)
    elif isinstance(value, Halt):
        emit = logger.info if value.state is TradingState.ACTIVE else logger.warning
        emit("halt", **halt_fields(value))
    elif isinstance(value, RiskEvent):
        emit = logger.warning if value.kind == "security" else logger.info
        emit(
            "risk_event",
            ts=format_ts(value.ts),
            event_id=value.event_id,
            kind=value.kind,
            account=value.account,
            details=value.details,
        )
    elif isinstance(value, RebalanceRun):
        logger.info(
            "rebalance_run",
            ts=format_ts(value.ts),
            run_id=value.run_id,
            account=value.account,
            status=value.status,
            trigger=value.trigger,
            orders=len(value.orders),
        )
    elif isinstance(value, DeadLetter):
        # `raw` is left out: it may be a whole control message with its signature.
        logger.warning("dead_letter", source=value.source.model_dump(exclude_none=True), error=value.error)
