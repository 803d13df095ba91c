"""State and budget views (SPEC §9) as pure functions of the level stages: the same code for web and replay.

Every view takes `levels` — a mapping of level name to stage (`"market"`, `"account"`, `"symbol"`,
`"portfolio"`), as the Faust worker holds them per partition, or an `Engine` of `riskguard replay`
— and an account id, and returns a JSON-ready dict, or None when the stages have not seen the
account (the web route answers 404). A view reads state and never changes it: pending quantities
are judged against the latest event time Level 1 has seen, without dropping expired entries.

| view | route | CLI (`riskguard state TAPE --account A --view V`) |
|---|---|---|
| `account_state` | `GET /accounts/{id}/state` | `state` |
| `budget` | `GET /budget/{id}` | `budget` |
| `budget_utilization` | `GET /budget/{id}/utilization` | `utilization` |
| `budget_recommendations` | `GET /budget/{id}/recommendations` | `recommendations` |
| `account_overview` | `GET /accounts/{id}/overview` (the operator page at `/`) | `overview` |

`held_accounts` lists the accounts of the partitions a worker holds (`GET /accounts`).
`rebalance_request` validates the body of `POST /rebalance/{id}` into a signed REBALANCE Control.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from schemas.inputs import Command, Control
from schemas.timefmt import format_ts
from streams.core import budget as bm
from streams.core.levels.account import rules as l1
from streams.core.levels.account.controls import params_problem, signature_check
from streams.core.levels.market.regime import classify
from streams.core.positions import Position
from streams.tape import BadMessage, decode_value, load_json

Levels = Mapping[str, Any]
View = Callable[[Any, str], dict[str, Any] | None]


def levels_of(source: Any) -> Levels:
    """The level-name -> stage mapping of an `Engine` (its `stages`), or the mapping itself."""
    if isinstance(source, Mapping):
        return source
    return {stage.name: stage for stage in source.stages}


def find(view: View, partitions: Iterable[Any], account: str) -> dict[str, Any] | None:
    """The first answer of `view` over several partitions' levels (the worker serves many), or None."""
    for levels in partitions:
        answer = view(levels, account)
        if answer is not None:
            return answer
    return None


def account_state(source: Any, account: str) -> dict[str, Any] | None:
    """`GET /accounts/{id}/state`: trading state and figures, regime, rebalance schedule, positions."""
    levels = levels_of(source)
    stage = levels["account"]
    state: l1.AccountState | None = stage.accounts.get(account)
    if state is None:
        return None
    config = stage.config
    rules = config.risk_for(account)
    view = stage.view(account)
    positions, gross, net = _book(levels, account, stage.clock)
    symbol_book = levels["symbol"].books.get(account)
    vetoed = sorted(s for s, v in symbol_book.symbols.items() if v.vetoed) if symbol_book is not None else []
    last_run = _last_run(levels, account)
    return {
        "account": account,
        "as_of": _iso(stage.clock),
        "trading_state": state.trading_state,
        "equity": view.equity,
        "balance": state.balance,
        "initial_balance": state.initial_balance,
        "day_start": _iso(state.day_start),
        "next_reset": _iso(state.next_reset),
        "figures": l1.figures(state, rules.account),
        "vol_scale": view.vol_scale,
        "regime": view.regime,
        "next_rebalance_at": _iso(view.next_rebalance_at),
        "rebalance": {
            "enabled": config.rebalance.enabled,
            "frequency": config.rebalance.frequency,
            "next_rebalance_at": _iso(view.next_rebalance_at),
            "last_run": last_run,
        },
        "exposure": {"gross": gross, "net": net},
        "positions": positions,
        "vetoed": vetoed,
    }


def budget(source: Any, account: str) -> dict[str, Any] | None:
    """`GET /budget/{id}`: the regime in force, where it comes from, its allocation and gross budget."""
    levels = levels_of(source)
    stage = levels["account"]
    state: l1.AccountState | None = stage.accounts.get(account)
    if state is None:
        return None
    config = stage.config.budget
    held: bm.AccountBudget | None = stage.budgets.get(account)
    regime = stage.view(account).regime
    equity = stage.view(account).equity
    allocation = config.regime_allocations.get(regime) if regime is not None else None
    cap = bm.budget_cap(config, regime, equity)
    static = stage.config.risk_for(account).portfolio.gross_cap
    in_force = [c for c in (cap, static) if c is not None]
    market = levels["market"].state
    reading = classify(market.classifier.closes, config.classifier) if config.benchmark is not None else None
    return {
        "account": account,
        "as_of": _iso(stage.clock),
        "enabled": config.enabled,
        "regime": regime,
        "source": held.source if held is not None and config.enabled else None,
        "pinned": held.pinned if held is not None else None,
        "pinned_all": stage.pinned_all,
        "allocation": allocation.model_dump(mode="json") if allocation is not None else None,
        "equity": equity,
        "allocated_capital": equity * allocation.equity_allocation
        if equity is not None and allocation is not None
        else None,
        "budget_gross_cap": cap,
        "static_gross_cap": static,
        "gross_cap_in_force": min(in_force) if in_force else None,
        "classifier": {
            "benchmark": config.benchmark,
            "reading": reading.to_json() if reading is not None else None,
            "bars": len(market.classifier.closes),
        },
        "auto_rebalance": config.auto_rebalance,
        "triggers": config.rebalancing_triggers.model_dump(mode="json"),
    }


def budget_utilization(source: Any, account: str) -> dict[str, Any] | None:
    """`GET /budget/{id}/utilization`: gross against the budget, realized vol against its target, drift."""
    levels = levels_of(source)
    stage = levels["account"]
    state: l1.AccountState | None = stage.accounts.get(account)
    if state is None:
        return None
    config = stage.config.budget
    view = stage.view(account)
    regime, equity = view.regime, view.equity
    positions, gross, net = _book(levels, account, stage.clock)
    cap = bm.budget_cap(config, regime, equity)
    allocation = config.regime_allocations.get(regime) if regime is not None else None
    held: bm.AccountBudget | None = stage.budgets.get(account)
    vol = held.vol if held is not None else None
    target = allocation.vol_target if allocation is not None else None
    allocated = equity * allocation.equity_allocation if equity is not None and allocation is not None else None
    market = levels["market"].state
    for line in positions:
        line["weight"] = _ratio(line["value"], equity)
        line["share_of_budget"] = _ratio(abs(line["value"]), cap)
    return {
        "account": account,
        "as_of": _iso(stage.clock),
        "regime": regime,
        "equity": equity,
        "gross": gross,
        "net": net,
        "budget_gross_cap": cap,
        "utilization": _ratio(gross, cap),
        "headroom": cap - gross if cap is not None else None,
        "allocated_capital": allocated,
        "allocation_used": _ratio(gross, allocated),
        "realized_vol": vol,
        "vol_target": target,
        "vol_limit": bm.vol_limit(config, regime) if allocation is not None and regime is not None else None,
        "vol_utilization": _ratio(vol, target),
        "correlation": market.correlation,
        "correlation_spike": config.rebalancing_triggers.correlation_spike,
        "drift": _drift(levels, account, equity),
        "positions": positions,
    }


def budget_recommendations(source: Any, account: str) -> dict[str, Any] | None:
    """`GET /budget/{id}/recommendations`: the latest recommendations, which are pending, what is active."""
    levels = levels_of(source)
    stage = levels["account"]
    if account not in stage.accounts:
        return None
    held: bm.AccountBudget | None = stage.budgets.get(account)
    symbol_book = levels["symbol"].books.get(account)
    records = [
        *(held.recommendations if held is not None else ()),
        *(symbol_book.recommendations if symbol_book else ()),
    ]
    records.sort(key=lambda r: (r["ts"], r["event_id"]))
    run = _run(levels, account)
    # Pending: not yet followed by an executed run (a run at the recommendation's own time acted on it).
    since = run["ts"] if run is not None and run["status"] == "executed" else None
    shown = [{**r, "ts": _iso(r["ts"])} for r in records]
    pending = [{**r, "ts": _iso(r["ts"])} for r in records if since is None or r["ts"] > since]
    return {
        "account": account,
        "as_of": _iso(stage.clock),
        "active": {
            bm.VOL_BREACH: held.vol_breach if held is not None else False,
            bm.DRIFT: symbol_book.drift_alarm if symbol_book is not None else False,
            bm.CORRELATION_SPIKE: levels["market"].state.spike,
        },
        "recommendations": shown,
        "pending": pending,
        "last_run": _last_run(levels, account),
    }


def account_overview(source: Any, account: str) -> dict[str, Any] | None:
    """`GET /accounts/{id}/overview` (the operator page's row): state, equity, each loss limit, budget use."""
    levels = levels_of(source)
    stage = levels["account"]
    state: l1.AccountState | None = stage.accounts.get(account)
    if state is None:
        return None
    rules = stage.config.risk_for(account).account
    equity = state.equity if state.equity is not None else 0.0
    initial, peak = state.initial_balance, state.peak_equity
    limits = []
    if rules.daily_loss is not None:
        base = l1.daily_base(state, rules)
        scale = base if rules.daily_loss.of == "day_start" else initial
        limits.append(_limit("daily_loss", equity, base, scale, None, rules.daily_loss.limit_pct))
    if rules.intraday_drawdown is not None:
        band = rules.intraday_drawdown
        limits.append(_limit("intraday_drawdown", equity, peak, peak, band.warn_pct, band.halt_pct))
    if rules.max_total_loss_pct is not None:
        limits.append(_limit("total_loss", equity, initial, initial, None, rules.max_total_loss_pct))
    if rules.trailing_drawdown is not None:
        trailing = rules.trailing_drawdown
        limits.append(_limit("trailing_drawdown", equity, state.trailing_mark, initial, None, trailing.pct))
        if trailing.lock_at_initial:
            limits[-1]["floor"] = min(limits[-1]["floor"], initial)
    used = budget_utilization(levels, account)
    assert used is not None  # noqa: S101 - the same account, known to Level 1
    return {
        "account": account,
        "as_of": _iso(stage.clock),
        "trading_state": state.trading_state,
        "equity": state.equity,
        "peak_equity": state.peak_equity,
        "next_reset": _iso(state.next_reset),
        "limits": limits,
        "regime": used["regime"],
        "budget": {key: used[key] for key in ("gross", "net", "budget_gross_cap", "utilization", "headroom")}
        | {"vol_utilization": used["vol_utilization"]},
    }


def held_accounts(partitions: Mapping[int, Levels]) -> list[dict[str, Any]]:
    """The accounts Level 1 holds on each partition, sorted: what `GET /accounts` and the operator page list."""
    return [
        {"account": account, "partition": partition}
        for partition, levels in sorted(partitions.items())
        for account in sorted(levels["account"].accounts)
    ]


VIEWS: dict[str, View] = {
    "state": account_state,
    "budget": budget,
    "utilization": budget_utilization,
    "recommendations": budget_recommendations,
    "overview": account_overview,
}


def rebalance_request(
    body: bytes | Mapping[str, Any], account: str, key: bytes | None, required: bool = True
) -> Control | str:
    """`POST /rebalance/{id}`: the body as a signed REBALANCE Control for that account, or why not.

    The signature rule is the controls' (SPEC §8), checked on the value as received; expiry and
    nonce reuse are judged in event time by Level 1 once the control is published. The caller must
    publish the body bytes as received to the control topic (re-serialising would break the
    signature) and answer 202; an error string is a 400 (403 when it starts with "security").
    """
    if isinstance(body, bytes | bytearray):
        try:
            value: Any = load_json(bytes(body))
        except BadMessage as exc:
            return str(exc)
    else:
        value = dict(body)
    if not isinstance(value, dict):
        return "the body must be a JSON object (a signed control)"
    try:
        control = decode_value("control", value, signature_check(key, required))
    except (BadMessage, ValidationError) as exc:
        return str(exc)
    assert isinstance(control, Control)  # noqa: S101 - decode_value of "control" gives a Control
    if control.command is not Command.REBALANCE:
        return f"POST /rebalance takes a REBALANCE control, got {control.command.value}"
    if control.account != account:
        return f"the control is for account {control.account!r}, not {account!r}"
    problem = params_problem(control.command.value, control.params, ())
    return problem if problem is not None else control


def _iso(ms: int | None) -> str | None:
    return format_ts(ms) if ms is not None else None


def _limit(
    name: str, equity: float, reference: float, scale: float, warn: float | None, limit: float
) -> dict[str, Any]:
    """One loss limit as the operator page draws it: the loss from `reference` as a fraction of `scale` (what
    the rule measures it against), the warning and halt fractions, the share of the limit used, and the
    equity at which the rule trips (`floor`)."""
    return {
        "name": name,
        "value": (reference - equity) / scale if scale > 0 else 0.0,
        "warn": warn,
        "limit": limit,
        "used": _ratio((reference - equity) / scale, limit) if scale > 0 else None,
        "floor": reference - limit * scale,
    }


def _ratio(part: float | None, whole: float | None) -> float | None:
    if part is None or whole is None or whole <= 0:
        return None
    return part / whole


def _pending(position: Position, clock: int) -> float:
    """Unexpired pending quantity at `clock`, without dropping the expired entries (a view changes nothing)."""
    return math.fsum(p.qty for p in position.pending.values() if p.expires_at > clock)


def _book(levels: Levels, account: str, clock: int) -> tuple[list[dict[str, Any]], float, float]:
    """Level-4 positions (filled, pending, mark, value) and the gross and net exposure."""
    stage = levels["portfolio"]
    book = stage.books.get(account)
    if book is None:
        return [], 0.0, 0.0
    lines: list[dict[str, Any]] = []
    for symbol in sorted(book.positions):
        position: Position = book.positions[symbol]
        pending = _pending(position, clock)
        if position.qty == 0 and pending == 0:
            continue
        close = stage.market.closes.get(symbol)
        price = close if close is not None else position.last_price
        value = (position.qty + pending) * price
        lines.append({"symbol": symbol, "qty": position.qty, "pending": pending, "price": price, "value": value})
    gross = math.fsum(abs(line["value"]) for line in lines)
    net = math.fsum(line["value"] for line in lines)
    return lines, gross, net


def _drift(levels: Levels, account: str, equity: float | None) -> dict[str, Any] | None:
    """The drift the Level-3 trigger sees: filled positions at the last closes against the targets."""
    stage = levels["symbol"]
    book = stage.books.get(account)
    if book is None or equity is None:
        return None
    values = {s: p.qty * stage.closes.get(s, p.avg_entry) for s, p in sorted(book.filled.items())}
    policy = stage.config.rebalance
    found = bm.max_drift(values, equity, policy.targets, policy.max_position_weight)
    threshold = stage.config.budget.rebalancing_triggers.drift_threshold
    if found is None:
        return {"max": None, "symbol": None, "threshold": threshold}
    return {"max": found[0], "symbol": found[1], "threshold": threshold}


def _run(levels: Levels, account: str) -> dict[str, Any] | None:
    book = levels["portfolio"].books.get(account)
    return book.last_run if book is not None else None


def _last_run(levels: Levels, account: str) -> dict[str, Any] | None:
    run = _run(levels, account)
    return {**run, "ts": _iso(run["ts"])} if run is not None else None
