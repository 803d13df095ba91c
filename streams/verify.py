"""`riskguard verify`: prove every recorded decision and halt from the inputs and from its own facts.

Two independent checks (SPEC §7): (1) replay the input tape — or a recording of the sequenced log
(`riskguard record --topics sequenced`), each partition on its own — and compare every recorded
decision and halt with the re-derived one, by id and content; (2) recompute each decision's verdict from
its published facts with the decision kernel, and each halt's state from its figures and the rules.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.config import Config
from schemas.outputs import Decision
from streams.core.engine import Engine
from streams.core.kernel.decision import TradeContext, evaluate
from streams.core.levels.account import rules as l1
from streams.tape import read_outputs, replay

CHECKED_TOPICS = ("decisions", "halts")
_ID_FIELD = {"decisions": "decision_id", "halts": "halt_id"}
_VERDICT = ("action", "side", "qty", "layer", "reason")


@dataclass
class Report:
    """What verify found: counts and human-readable problems."""

    checked: dict[str, int] = field(default_factory=dict)
    from_facts: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _index(
    envelopes: Iterable[tuple[int, dict[str, Any]]],
) -> dict[str, dict[str, tuple[int, dict[str, Any]]]]:
    found: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {topic: {} for topic in CHECKED_TOPICS}
    for number, envelope in envelopes:
        topic = envelope.get("topic")
        if topic in CHECKED_TOPICS:
            value = envelope.get("value") or {}
            found[topic][str(value.get(_ID_FIELD[topic]))] = (number, value)
    return found


def diff(recorded: dict[str, Any], derived: dict[str, Any]) -> str:
    keys = sorted(set(recorded) | set(derived))
    changed = [k for k in keys if recorded.get(k) != derived.get(k)]
    parts = []
    for key in changed[:4]:
        parts.append(f"{key}: recorded {_short(recorded.get(key))} vs derived {_short(derived.get(key))}")
    return "; ".join(parts)


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def verify(
    config: Config,
    inputs: Iterable[bytes],
    outputs: Iterable[bytes],
    limit: int = 50,
    control_key: bytes | None = None,
) -> Report:
    """Check an output tape against its input tape and against its own facts."""
    from streams.audit.core import is_log_recording, peek, replay_log

    report = Report()
    derived_buffer = io.BytesIO()
    first, lines = peek(inputs)
    if first is not None and is_log_recording(first):  # a recording of the sequenced log, not an input tape
        replay_log(config, lines, derived_buffer)
    else:
        replay(Engine(config, control_key=control_key), lines, derived_buffer)
    derived = _index(read_outputs(derived_buffer.getvalue().splitlines()))
    recorded = _index(read_outputs(outputs))
    for topic in CHECKED_TOPICS:
        report.checked[topic] = len(recorded[topic])
        for ident, (number, value) in recorded[topic].items():
            twin = derived[topic].get(ident)
            if twin is None:
                report.problems.append(f"output line {number}: {topic} {ident} does not re-derive from the inputs")
            elif twin[1] != value:
                report.problems.append(f"output line {number}: {topic} {ident} differs: {diff(value, twin[1])}")
        for ident in derived[topic].keys() - recorded[topic].keys():
            report.problems.append(f"missing: {topic} {ident} follows from the inputs but is not in the output")
    for number, value in recorded["decisions"].values():
        report.from_facts += 1
        problem = check_facts(value)
        if problem:
            report.problems.append(f"output line {number}: decision {value.get('decision_id')} {problem}")
    for number, value in recorded["halts"].values():
        problem = check_halt(config, value)
        if problem:
            report.problems.append(f"output line {number}: halt {value.get('halt_id')} {problem}")
    if len(report.problems) > limit:
        extra = len(report.problems) - limit
        report.problems = [*report.problems[:limit], f"... and {extra} more"]
    return report


def check_facts(value: dict[str, Any]) -> str | None:
    facts = value.get("facts") or {}
    if "origin" not in facts:
        return None if value.get("action") in ("DENY", "NOOP") and value.get("qty") == 0 else "has no facts"
    try:
        decision = Decision.model_validate(value)
        outcome = evaluate(TradeContext.from_facts(facts))
    except (ValueError, TypeError) as exc:
        return f"facts do not evaluate: {exc}"
    derived = {
        "action": outcome.action,
        "side": outcome.side,
        "qty": outcome.qty,
        "layer": outcome.layer,
        "reason": outcome.reason,
    }
    recorded = {
        "action": decision.action.value,
        "side": decision.side.value if decision.side else None,
        "qty": decision.qty,
        "layer": decision.layer.value,
        "reason": decision.reason,
    }
    if derived != recorded:
        return "does not follow from its facts: " + diff(recorded, derived)
    return None


_ESCALATIONS = {"max_total_loss", "daily_loss", "intraday_drawdown", "intraday_drawdown_warning"}


def check_halt(config: Config, value: dict[str, Any]) -> str | None:
    reason = value.get("reason")
    if reason not in _ESCALATIONS:
        return None
    facts = value.get("facts") or {}
    rules = config.risk_for(str(value.get("account"))).account
    state = l1.AccountState(
        initialized=True,
        equity=facts.get("equity"),
        day_start_equity=facts.get("day_start_equity", 0.0),
        day_start_balance=facts.get("day_start_balance", 0.0),
        peak_equity=facts.get("peak_equity", 0.0),
        initial_balance=facts.get("initial_balance", 0.0),
        trailing_mark=float("-inf"),
    )
    wanted, why = l1.target_state(state, rules)
    if (wanted, why) != (value.get("state"), reason):
        return f"does not follow from its facts: rules give {wanted}/{why}, recorded {value.get('state')}/{reason}"
    return None
