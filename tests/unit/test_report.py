"""`riskguard report` (SPEC §9): the HTML/PNG report rendered from a replay of the real S&P 500 data, Jan–Feb 2018."""

from __future__ import annotations

import base64
import csv
import re
import struct
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.timefmt import format_ts, parse_ts
from streams.report import CHART_NAMES, ChartFile, ReportSummary, render_report
from streams.testing import TapeBuilder

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ACCOUNTS = {"A001": (1_000_000.0, slice(None)), "A002": (600_000.0, slice(None, None, 2))}  # book, which names
HEADINGS = (
    "Summary",
    "Equity and drawdown",
    "Halts and state changes",
    "Decisions over time",
    "Top binding layers and reasons",
    "Cluster exposure",
    "Dead letters",
)


def _days() -> dict[str, dict[str, dict[str, float]]]:
    days: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    with (DATA / "sp500_daily_2018-01-02_2018-02-07.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            days[row["date"]][row["symbol"]] = {k: float(row[k]) for k in ("open", "high", "low", "close")}
    return dict(sorted(days.items()))


def real_data_session() -> tuple[TapeBuilder, dict[str, Any]]:
    """60 real names, daily bars at 21:00Z; two equal-weight `high_leverage` books bought at the first close.

    Equity is marked at every close; a few oversized signals get clipped, the ones after the 5 Feb sell-off are
    denied (halted account, then one giant correlation cluster), and one bad line goes to the dead letters.
    """
    days = _days()
    first = next(iter(days))
    universe = sorted(days[first])[::8][:60]
    tape = TapeBuilder()
    books: dict[str, dict[str, float]] = {}
    for number, (date, bars) in enumerate(days.items()):
        close = f"{date}T21:00:00Z"
        for symbol in universe:
            if symbol in bars:
                b = bars[symbol]
                low, high = min(b["low"], b["open"], b["close"]), max(b["high"], b["open"], b["close"])
                tape.bar(symbol, close, b["open"], high, low, b["close"])
        if date == first:
            for account, (book, names) in ACCOUNTS.items():
                held = universe[names]
                tape.equity(account, f"{date}T20:59:00Z", book)
                books[account] = {s: book / len(held) / bars[s]["close"] for s in held}
                for symbol, qty in books[account].items():
                    tape.fill(
                        account, symbol, "BUY", qty, bars[symbol]["close"], close, fill_id=f"init-{account}-{symbol}"
                    )
        for account, shares in books.items():
            equity = sum(qty * bars[s]["close"] for s, qty in shares.items() if s in bars)
            tape.equity(account, f"{date}T21:00:01Z", equity)
        if number in (3, 10, 17) or date in ("2018-02-05", "2018-02-06"):
            for offset, account in enumerate(ACCOUNTS):
                symbol = universe[(number * 7 + offset * 3) % len(universe)]
                notional = 400_000.0 if number in (3, 17) else 60_000.0
                tape.signal(
                    account, symbol, f"{date}T21:00:02Z", signal_id=f"sig-{account}-{date}", target_notional=notional
                )
        if number == 12:
            tape.raw('{"topic": "bars", "key": "X", "value": {"symbol": "X", "ts": "2018-01-19T21:00:00Z"}}')
    config = {
        "accounts": {a: {"profile": "high_leverage", "initial_balance": book} for a, (book, _) in ACCOUNTS.items()}
    }
    return tape, config


@pytest.fixture(scope="module")
def tape_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert DATA.is_dir(), f"real data missing: {DATA}"
    tape, config = real_data_session()
    path = tmp_path_factory.mktemp("report") / "replay-2018.jsonl"
    path.write_bytes(tape.run(config).data)
    return path


@pytest.fixture(scope="module")
def rendered(tape_path: Path) -> tuple[ReportSummary, Path, Path]:
    html_path, png_dir = tape_path.parent / "report.html", tape_path.parent / "png"
    return render_report(tape_path, html_path, png_dir), html_path, png_dir


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _envelopes(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_render_when_real_data_replay_then_page_has_every_section_account_and_the_5_feb_halt(
    rendered: tuple[ReportSummary, Path, Path],
) -> None:
    _summary, html_path, _png_dir = rendered

    page = html_path.read_text(encoding="utf-8")

    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in page
    assert "A001" in page and "A002" in page
    assert "2018-02-05 21:00:01Z" in page and "daily_loss" in page  # the halt row
    assert "max_weight" in page and "cluster_cap" in page  # binding reasons in the table
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched
    assert page.count('src="data:image/png;base64,') == len(CHART_NAMES)


def test_render_when_png_dir_given_then_each_chart_is_a_png_of_the_announced_size_and_matches_the_page(
    rendered: tuple[ReportSummary, Path, Path],
) -> None:
    summary, html_path, png_dir = rendered
    page = html_path.read_text(encoding="utf-8")
    embedded = [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]

    assert [c.name for c in summary.charts] == list(CHART_NAMES)
    assert summary.charts == (
        ChartFile("report-equity.png", 1100, 760),
        ChartFile("report-decisions.png", 1100, 820),
        ChartFile("report-clusters.png", 1100, 560),
    )
    for chart, inline in zip(summary.charts, embedded, strict=True):
        data = (png_dir / chart.name).read_bytes()
        assert _png_size(data) == (chart.width, chart.height)
        assert data == inline
        assert len(data) < 300_000


def test_render_when_real_data_replay_then_summary_counts_equal_the_tape(
    rendered: tuple[ReportSummary, Path, Path], tape_path: Path
) -> None:
    summary, _html, _png = rendered
    envelopes = _envelopes(tape_path)
    topics = Counter(e["topic"] for e in envelopes)
    decisions = [e["value"] for e in envelopes if e["topic"] == "decisions"]
    halts = [e["value"] for e in envelopes if e["topic"] == "halts"]
    actions = Counter(d["action"] for d in decisions)
    times = [parse_ts(e["value"]["ts"]) for e in envelopes if e["topic"] in ("decisions", "halts", "events")]

    assert summary.lines == len(envelopes) and summary.unreadable == 0
    assert (summary.decisions, summary.halts, summary.events) == (
        topics["decisions"],
        topics["halts"],
        topics["events"],
    )
    assert summary.dead_letters == topics["deadletter"] == 1
    assert (summary.allow, summary.clip, summary.deny, summary.noop) == tuple(
        actions[a] for a in ("ALLOW", "CLIP", "DENY", "NOOP")
    )
    assert summary.clip > 0 and summary.deny > 0
    assert summary.accounts == ("A001", "A002")
    assert summary.halted_accounts == tuple(sorted({h["account"] for h in halts if h["state"] == "HALTED"}))
    assert summary.halted_accounts == ("A001", "A002")  # the 5 Feb 2018 sell-off breaks the 3 % daily limit
    assert (summary.first_ts, summary.last_ts) == (format_ts(min(times)), format_ts(max(times)))
    assert summary.last_ts == "2018-02-07T21:00:00.000Z"  # the last close


def test_render_when_same_tape_twice_then_byte_identical_html_and_pngs(
    rendered: tuple[ReportSummary, Path, Path], tape_path: Path, tmp_path: Path
) -> None:
    summary, html_path, png_dir = rendered

    again = render_report(tape_path, tmp_path / "again.html", tmp_path / "png")

    assert again == summary
    assert (tmp_path / "again.html").read_bytes() == html_path.read_bytes()
    for name in CHART_NAMES:
        assert (tmp_path / "png" / name).read_bytes() == (png_dir / name).read_bytes()


def test_render_when_progress_given_then_called_with_bytes_read_up_to_the_file_size(
    tape_path: Path, tmp_path: Path
) -> None:
    seen: list[int] = []

    render_report(tape_path, tmp_path / "r.html", progress=seen.append)

    assert seen and seen == sorted(seen) and seen[-1] == tape_path.stat().st_size
    assert not list(tmp_path.glob("*.png"))  # no png_dir: the charts live only inside the page


def test_render_when_empty_or_garbled_tape_then_page_still_renders_with_zero_counts(tmp_path: Path) -> None:
    tape = tmp_path / "empty.jsonl"
    tape.write_bytes(b"\n{not json\n")

    summary = render_report(tape, tmp_path / "out" / "r.html", tmp_path / "png", title="Nothing <here>")

    assert (summary.lines, summary.unreadable, summary.decisions, summary.accounts) == (1, 1, 0, ())
    assert summary.first_ts is None and summary.last_ts is None
    page = (tmp_path / "out" / "r.html").read_text(encoding="utf-8")
    assert "<h1>Nothing &lt;here&gt;</h1>" in page and "No account changed trading state." in page
    assert _png_size((tmp_path / "png" / "report-decisions.png").read_bytes()) == (1100, 820)
