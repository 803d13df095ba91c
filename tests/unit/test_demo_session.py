"""How `make run` plays a session: bars as the market feed, signals for the example execution service."""

from __future__ import annotations

import orjson

from streams.demo import BAR_TIME_S, split_session
from streams.gen import GenParams, generate
from streams.testing import TapeBuilder


def test_split_session_when_generated_tape_then_bars_and_signals_without_the_tapes_own_fills() -> None:
    tape = [line.strip() for line in generate(GenParams(symbols=6, accounts=2, days=1, session_minutes=30))]
    topics = [orjson.loads(line)["topic"] for line in tape]

    session = split_session(tape)

    assert session is not None and "fills" in topics
    assert len(session.bars) == topics.count("bars") and len(session.signals) == topics.count("signals") > 0
    assert all(orjson.loads(line)["topic"] == "bars" for line in session.bars)
    assert all("signal_id" in orjson.loads(line) for line in session.signals)  # values, not envelopes
    assert session.equity == GenParams().initial_equity
    assert session.bar_times == 30 and session.bar_rate == 6 / BAR_TIME_S


def test_split_session_when_tape_has_no_signals_then_none_and_published_as_it_is() -> None:
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 1_000).flat_bar("X", "2024-01-15T14:00:00Z", 10.0)

    assert split_session(tape.to_bytes()) is None
