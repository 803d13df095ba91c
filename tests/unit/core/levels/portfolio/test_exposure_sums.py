"""Level 4's exposure sums, kept between decisions, give the very floats a sum over every position gives."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.config import load_config
from streams.core.engine import Engine
from streams.core.items import item_for
from streams.core.levels.portfolio.exposure import ExposureSums, exposures
from streams.gen import GenParams, generate
from streams.tape import decode_line

ROOT = Path(__file__).resolve().parents[5]
SYMBOLS = ["A", "B", "C", "D", "E"]
GROUP = {"A": "g1", "B": "g1", "C": "g2", "D": "g2", "E": "g3"}
values = st.one_of(
    st.none(),
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.1, 0.2, 0.3, -0.1, 1e-9, 123456789.123, -0.0]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(SYMBOLS), values, st.sampled_from(["k1", "k2"])), max_size=40),
    st.sampled_from(SYMBOLS),
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False),
)
def test_exposure_when_values_change_any_number_of_times_then_equal_to_summing_every_position(
    changes: list[tuple[str, float | None, str]], sym: str, value: float
) -> None:
    sums = ExposureSums(cluster_version=0)
    held: dict[str, float] = {}
    cluster: dict[str, str] = {}
    for symbol, new, clus in changes:
        sums.put(symbol, new, GROUP[symbol], clus)
        cluster[symbol] = clus
        if new is None:
            held.pop(symbol, None)
        else:
            held[symbol] = new
    clus_of = cluster.get(sym, "k1")
    full = [(s, v) for s, v in held.items() if s != sym] + [(sym, value)]

    got = sums.exposure(sym, value, GROUP[sym], clus_of)
    want = exposures(
        full, GROUP.__getitem__, lambda s: cluster.get(s, "k1") if s != sym else clus_of, GROUP[sym], clus_of
    )

    assert got == want
    assert [x.hex() for x in (got.group_exposure, got.cluster_exposure, got.gross, got.net)] == [
        x.hex() for x in (want.group_exposure, want.cluster_exposure, want.gross, want.net)
    ]


def test_exposure_when_a_counted_value_is_not_finite_then_summed_as_every_position_would_be() -> None:
    sums = ExposureSums(cluster_version=0)
    sums.put("A", 100.0, "g1", "k1")
    sums.put("B", float("inf"), "g1", "k2")
    got = sums.exposure("C", -5.0, "g2", "k1")
    want = exposures(
        [("A", 100.0), ("B", float("inf")), ("C", -5.0)],
        GROUP.__getitem__,
        {"A": "k1", "B": "k2", "C": "k1"}.__getitem__,
        "g2",
        "k1",
    )
    assert got == want and got.gross == float("inf")
    sums.put("B", 7.0, "g1", "k2")  # finite again: the exact sums answer
    assert sums.odd == 0
    assert sums.exposure("C", -5.0, "g2", "k1") == exposures(
        [("A", 100.0), ("B", 7.0), ("C", -5.0)],
        GROUP.__getitem__,
        {"A": "k1", "B": "k2", "C": "k1"}.__getitem__,
        "g2",
        "k1",
    )


def test_sums_when_a_generated_session_ends_then_every_account_counts_what_its_positions_are_worth() -> None:
    config = load_config(ROOT / "deploy" / "profiles" / "demo.yaml")
    engine = Engine(config)
    last_ts = 0
    for line in generate(GenParams(symbols=20, accounts=4, days=2, seed=5, fill_delay_bars=3), config):
        topic, _, value = decode_line(line.strip())
        engine.chain.run([item_for(topic, value)])
        last_ts = max(last_ts, int(getattr(value, "ts", 0) or 0))
    stage = engine.portfolio
    later = last_ts + 10 * 60_000  # every pending decision of the session has expired by then
    checked = 0
    for account, book in sorted(stage.books.items()):
        if book.sums is None:
            continue
        sums = stage._sums(account, book, stage.rules(account).groups.group_of, later)
        worth = {}
        for sym, position in book.positions.items():
            qty = position.projected(later)
            if qty != 0:
                worth[sym] = qty * stage._mark(sym, position)
        assert sums.contrib == worth
        assert all(not position.pending for position in book.positions.values())
        checked += len(worth)
    assert checked > 0
