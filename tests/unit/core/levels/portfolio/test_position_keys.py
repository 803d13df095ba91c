"""Level 4 stores each position under its own key: a decision rewrites its symbol's position, not the book."""

from __future__ import annotations

from schemas.inputs import Signal
from streams.core.items import Item
from streams.core.levels.portfolio.snapshot import dump_portfolio, load_portfolio
from streams.core.levels.portfolio.stage import PortfolioStage, position_key
from streams.testing import TapeBuilder

T0 = 1_704_205_800_000  # 2024-01-02 14:30 UTC


def _session() -> TapeBuilder:
    tape = TapeBuilder().equity("a", T0, 100_000)
    for sym in ("X", "Y", "Z"):
        tape.flat_bar(sym, T0, 10.0)
    for n, sym in enumerate(("X", "Y", "Z")):
        tape.signal("a", sym, T0 + 1000 * (n + 1), f"s-{sym}", target_notional=1_000)
    return tape


def test_position_keys_when_a_signal_is_decided_then_only_its_symbols_position_is_touched() -> None:
    engine = _session().run().engine
    level = engine.portfolio
    assert level.positions_changed == {position_key("a", s) for s in ("X", "Y", "Z")}
    level.positions_changed = set()
    sig = Signal.model_validate(
        {"signal_id": "s-new", "account": "a", "symbol": "Y", "ts": T0 + 9000, "strategy": "t", "target_notional": 3e3}
    )

    outputs = engine.process("signals", sig)
    keys = level.touched(Item("signal", "a", sig), [])
    dumped = dump_portfolio(level, keys)

    decisions = [o.value for o in outputs if o.topic == "decisions"]
    assert [d.action for d in decisions] == ["ALLOW"]
    assert keys == {"a", position_key("a", "Y")}
    assert set(dumped) == {"a", position_key("a", "Y")}
    assert "positions" not in dumped["a"]
    pending = dumped[position_key("a", "Y")]["pending"]
    assert len(pending) == 2 and decisions[0].decision_id in pending


def test_position_keys_when_loaded_in_any_order_then_the_book_comes_back_whole() -> None:
    engine = _session().run().engine
    dumped = dump_portfolio(engine.portfolio)
    assert {k for k in dumped if "|" in k} == {position_key("a", s) for s in ("X", "Y", "Z")}

    for order in (sorted(dumped), sorted(dumped, reverse=True)):
        fresh = PortfolioStage(engine.config)
        for key in order:
            load_portfolio(fresh, key, dumped[key])
        assert fresh.books["a"].positions == engine.portfolio.books["a"].positions
        assert fresh.books["a"].quota_used == engine.portfolio.books["a"].quota_used
        assert fresh.positions_changed == set()


def test_position_keys_when_a_snapshot_holds_positions_inline_then_each_is_written_apart_next() -> None:
    engine = _session().run().engine
    dumped = dump_portfolio(engine.portfolio)
    inline = {s: dumped[position_key("a", s)] for s in ("X", "Y", "Z")}
    fresh = PortfolioStage(engine.config)

    load_portfolio(fresh, "a", {**dumped["a"], "positions": inline})

    assert fresh.books["a"].positions == engine.portfolio.books["a"].positions
    assert fresh.positions_changed == {position_key("a", s) for s in ("X", "Y", "Z")}
    rewritten = dump_portfolio(fresh, fresh.positions_changed | {"a"})
    assert {k: rewritten[k] for k in rewritten if "|" in k} == {position_key("a", s): inline[s] for s in inline}
    assert "positions" not in rewritten["a"]
