"""`riskguard report`: one self-contained HTML page (and PNG charts) from an output tape (SPEC §9).

The page answers what a risk manager asks of a replay: how did each account's equity and drawdown move, when
did the guard change trading state, what did it decide over time and which layers bit, and how close did the
correlation clusters run to their cap.  Everything on the page comes from the tape's own event times, so the same
tape always renders to the same bytes.  The tape is read line by line; only a few numbers per decision are kept.

Charts are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch), with the
library defaults reset for the duration of a render so that a user's `matplotlibrc` cannot change the pictures.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.dates as mdates
import numpy as np
import orjson
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter
from matplotlib.typing import RcKeyType

from schemas.timefmt import format_ts, parse_ts

__all__ = ["CHART_NAMES", "DPI", "MAX_CHART_ACCOUNTS", "ChartFile", "ReportSummary", "chart_size", "render_report"]

DPI = 100
WIDTH_IN = 11.0
MAX_CHART_ACCOUNTS = 6
"""At most this many accounts get their own panels; the others are in the tables (halted and deepest first)."""
PROGRESS_EVERY = 4096
"""`progress` is called every this many lines (and once at the end)."""
MAX_BUCKETS = 60
TOP_BINDING = 15
MAX_DEAD_LETTER_ROWS = 20
MAX_HALT_LABELS = 6

CHART_NAMES = ("report-equity.png", "report-decisions.png", "report-clusters.png")

ACTIONS = ("ALLOW", "CLIP", "DENY", "NOOP")
LAYERS = ("account", "cluster", "per_symbol", "per_trade", "group", "portfolio")
ACTION_COLOURS = {"ALLOW": "#4c9a5b", "CLIP": "#e8a33d", "DENY": "#c8423b", "NOOP": "#b9b9b9"}
LAYER_COLOURS = {
    "account": "#3b6ea8",
    "cluster": "#8a5cb0",
    "per_symbol": "#3fa7a0",
    "per_trade": "#9c6b4e",
    "group": "#d17fb3",
    "portfolio": "#a9a83c",
}
STATE_COLOURS = {
    "ACTIVE": "#4c9a5b",
    "WARNING": "#e8c23d",
    "REDUCING": "#e07b39",
    "HALTED": "#c8423b",
    "SHUTDOWN": "#3a2b3f",
}
OTHER_COLOUR = "#7f7f7f"
EQUITY_COLOUR = "#24476b"
BUCKETS_MS = (
    60_000,
    5 * 60_000,
    15 * 60_000,
    30 * 60_000,
    3_600_000,
    2 * 3_600_000,
    4 * 3_600_000,
    6 * 3_600_000,
    12 * 3_600_000,
    86_400_000,
    7 * 86_400_000,
    28 * 86_400_000,
)

_RC: dict[RcKeyType, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titlelocation": "left",
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#888888",
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "timezone": "UTC",
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "path.simplify": True,
}


@dataclass(frozen=True, slots=True)
class ChartFile:
    """One chart of the report: its file name and pixel size."""

    name: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class ReportSummary:
    """The headline numbers of a report."""

    lines: int
    """Non-blank lines of the tape."""
    unreadable: int
    """Lines that were not a JSON envelope (skipped)."""
    decisions: int
    allow: int
    clip: int
    deny: int
    noop: int
    halts: int
    """Trading-state changes (every `halts` message, resets included)."""
    events: int
    dead_letters: int
    rebalance_runs: int
    accounts: tuple[str, ...]
    halted_accounts: tuple[str, ...]
    """Accounts that entered HALTED or SHUTDOWN at least once."""
    first_ts: str | None
    last_ts: str | None
    charts: tuple[ChartFile, ...]


def chart_size(name: str, accounts: int) -> tuple[int, int]:
    """Pixel size (width, height) of a chart for `accounts` accounts with panels (capped at MAX_CHART_ACCOUNTS)."""
    shown = max(1, min(accounts, MAX_CHART_ACCOUNTS))
    width = round(WIDTH_IN * DPI)
    if name == "report-equity.png":
        return width, 100 + 330 * shown
    if name == "report-decisions.png":
        return width, 820
    if name == "report-clusters.png":
        return width, 100 + 230 * shown
    raise ValueError(f"unknown chart {name!r}")


# --------------------------------------------------------------------------------------------------- collection


@dataclass(frozen=True, slots=True)
class _HaltRow:
    ts: int
    account: str
    state: str
    previous: str
    reason: str
    until: str | None
    equity: float | None
    daily_loss_pct: float | None
    intraday_drawdown_pct: float | None
    total_loss_pct: float | None


@dataclass(slots=True)
class _Account:
    equity: dict[int, float] = field(default_factory=dict)
    actions: Counter[str] = field(default_factory=Counter)
    halts: list[_HaltRow] = field(default_factory=list)
    cluster_ts: list[int] = field(default_factory=list)
    cluster_ratio: list[float] = field(default_factory=list)
    cluster_cap: list[float] = field(default_factory=list)
    cluster_action: list[str] = field(default_factory=list)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


class _Collector:
    """Everything the report needs, gathered in one pass over the tape."""

    def __init__(self) -> None:
        self.lines = 0
        self.unreadable = 0
        self.topics: Counter[str] = Counter()
        self.accounts: dict[str, _Account] = defaultdict(_Account)
        self.dec_ts: list[int] = []
        self.dec_action: list[str] = []
        self.dec_layer: list[str] = []
        self.binding: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        self.halts: list[_HaltRow] = []
        self.event_kinds: Counter[str] = Counter()
        self.dead_letters: list[tuple[str, str, str]] = []
        self.first: int | None = None
        self.last: int | None = None
        self._ts_cache: dict[str, int | None] = {}

    def _ts(self, value: Any) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if not isinstance(value, str):
            return None
        if value in self._ts_cache:
            return self._ts_cache[value]
        try:
            ms: int | None = parse_ts(value)
        except ValueError:
            ms = None
        if len(self._ts_cache) < 1_000_000:
            self._ts_cache[value] = ms
        return ms

    def _seen(self, ts: int) -> None:
        if self.first is None or ts < self.first:
            self.first = ts
        if self.last is None or ts > self.last:
            self.last = ts

    def add(self, raw: bytes) -> None:
        self.lines += 1
        try:
            envelope = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.unreadable += 1
            return
        if not isinstance(envelope, dict) or not isinstance(envelope.get("value"), dict):
            self.unreadable += 1
            return
        topic = _text(envelope.get("topic"), "?")
        value: dict[str, Any] = envelope["value"]
        self.topics[topic] += 1
        if topic == "decisions":
            self._decision(value)
        elif topic == "halts":
            self._halt(value)
        elif topic == "events":
            self.event_kinds[_text(value.get("kind"), "?")] += 1
            ts = self._ts(value.get("ts"))
            if ts is not None:
                self._seen(ts)
        elif topic == "deadletter":
            source = _dict(value.get("source"))
            where = source.get("line") if source.get("line") is not None else source.get("offset")
            place = f"line {where}" if source.get("line") is not None else f"{source.get('topic')}@{where}"
            self.dead_letters.append((place, _text(value.get("key"), "-"), _text(value.get("error"))))

    def _decision(self, value: dict[str, Any]) -> None:
        ts = self._ts(value.get("ts"))
        account_id = _text(value.get("account"), "?")
        action = _text(value.get("action"), "?")
        layer = _text(value.get("layer"), "?")
        account = self.accounts[account_id]
        account.actions[action] += 1
        if ts is None:
            return
        self._seen(ts)
        self.dec_ts.append(ts)
        self.dec_action.append(action)
        self.dec_layer.append(layer)
        if action in ("CLIP", "DENY"):
            row = self.binding[(layer, _text(value.get("reason"), "?"))]
            row[0 if action == "CLIP" else 1] += 1
            price = _number(value.get("price")) or 0.0
            held = ((_number(value.get("requested_qty")) or 0.0) - (_number(value.get("qty")) or 0.0)) * abs(price)
            row[2] += max(held, 0.0)
        facts = value.get("facts")
        if not isinstance(facts, dict):
            return
        equity = _number(facts.get("equity"))
        if equity is None:
            return
        account.equity[ts] = equity
        exposure, cap = _number(facts.get("cluster_exposure")), _number(facts.get("cluster_cap"))
        if exposure is not None and equity > 0:
            account.cluster_ts.append(ts)
            account.cluster_ratio.append(abs(exposure) / equity)
            account.cluster_cap.append(cap / equity if cap is not None else math.nan)
            account.cluster_action.append(action)

    def _halt(self, value: dict[str, Any]) -> None:
        ts = self._ts(value.get("ts"))
        if ts is None:
            return
        self._seen(ts)
        facts = _dict(value.get("facts"))
        row = _HaltRow(
            ts=ts,
            account=_text(value.get("account"), "?"),
            state=_text(value.get("state"), "?"),
            previous=_text(value.get("previous_state"), "?"),
            reason=_text(value.get("reason")),
            until=value.get("until") if isinstance(value.get("until"), str) else None,
            equity=_number(facts.get("equity")),
            daily_loss_pct=_number(facts.get("daily_loss_pct")),
            intraday_drawdown_pct=_number(facts.get("intraday_drawdown_pct")),
            total_loss_pct=_number(facts.get("total_loss_pct")),
        )
        self.halts.append(row)
        account = self.accounts[row.account]
        account.halts.append(row)
        if row.equity is not None:
            account.equity[ts] = row.equity


# --------------------------------------------------------------------------------------------------- series


@dataclass(frozen=True, slots=True)
class _Series:
    """An account's equity marks in time order with the drawdown from the running peak."""

    ts: np.ndarray[Any, np.dtype[np.int64]]
    equity: np.ndarray[Any, np.dtype[np.float64]]
    drawdown: np.ndarray[Any, np.dtype[np.float64]]

    @property
    def max_drawdown(self) -> float:
        return float(self.drawdown.min()) if self.drawdown.size else 0.0

    def drawdown_at(self, ts: int) -> float:
        index = int(np.searchsorted(self.ts, ts, side="right")) - 1
        return float(self.drawdown[index]) if index >= 0 else 0.0


def _series(account: _Account) -> _Series:
    stamps = sorted(account.equity)
    ts = np.array(stamps, dtype=np.int64)
    equity = np.array([account.equity[t] for t in stamps], dtype=np.float64)
    if equity.size:
        peak = np.maximum.accumulate(equity)
        drawdown = np.where(peak > 0, equity / np.where(peak > 0, peak, 1.0) - 1.0, 0.0)
    else:
        drawdown = np.zeros(0, dtype=np.float64)
    return _Series(ts, equity, drawdown)


def _dates(ts: Iterable[int] | np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.datetime64]]:
    return np.asarray(np.array(list(ts) if not isinstance(ts, np.ndarray) else ts, dtype=np.int64), "datetime64[ms]")


def _x(ts: int) -> float:
    """A matplotlib date coordinate for one event time (for lines, spans and labels)."""
    return float(mdates.date2num(np.datetime64(ts, "ms")))  # type: ignore[no-untyped-call]


def _when(ts: int | None) -> str:
    if ts is None:
        return "-"
    moment = datetime.fromtimestamp(ts / 1000, tz=UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{ts % 1000:03d}Z" if ts % 1000 else f"{text}Z"


def _until(value: str | None) -> str:
    if value is None:
        return "-"
    try:
        return _when(parse_ts(value))
    except ValueError:
        return value


def _bucket(first: int, last: int) -> int:
    span = max(last - first, 1)
    for size in BUCKETS_MS:
        if span / size <= MAX_BUCKETS:
            return size
    return BUCKETS_MS[-1]


def _bucket_label(size: int) -> str:
    if size % 86_400_000 == 0:
        days = size // 86_400_000
        return "day" if days == 1 else f"{days} days"
    if size % 3_600_000 == 0:
        hours = size // 3_600_000
        return "hour" if hours == 1 else f"{hours} hours"
    return f"{size // 60_000} min"


def _chart_accounts(collector: _Collector, series: dict[str, _Series]) -> list[str]:
    """Accounts that get panels: all when few, else the halted and deepest-drawdown ones (shown in id order)."""
    ids = sorted(collector.accounts)
    if len(ids) <= MAX_CHART_ACCOUNTS:
        return ids

    def rank(account_id: str) -> tuple[int, float, str]:
        stops = sum(1 for h in collector.accounts[account_id].halts if h.state in ("HALTED", "SHUTDOWN"))
        return (-stops, series[account_id].max_drawdown, account_id)

    return sorted(sorted(ids, key=rank)[:MAX_CHART_ACCOUNTS])


# --------------------------------------------------------------------------------------------------- charts


def _new_figure(name: str, accounts: int) -> Figure:
    width, height = chart_size(name, accounts)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _time_axis(axes: Axes, first: int | None, last: int | None) -> None:
    locator = mdates.AutoDateLocator(minticks=5, maxticks=12, tz=UTC)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))  # type: ignore[no-untyped-call]
    if first is not None and last is not None:
        pad = max((last - first) // 40, 60_000)
        axes.set_xlim(_x(first - pad), _x(last + pad))


def _no_data(axes: Axes, message: str) -> None:
    axes.text(0.5, 0.5, message, transform=axes.transAxes, ha="center", va="center", color="#777777")
    axes.set_yticks([])


def _money(value: float, _pos: int | None = None) -> str:
    """Tick labels in thousands (`1,015k`) up to 100m, then millions, then billions."""
    magnitude = abs(value)
    if magnitude >= 1e11:
        return f"{value / 1e9:,.1f}bn"
    if magnitude >= 1e8:
        return f"{value / 1e6:,.0f}m"
    if magnitude >= 1e4:
        return f"{value / 1e3:,.0f}k"
    return f"{value:,.0f}"


def _state_spans(axes: Axes, halts: Sequence[_HaltRow], end: int) -> None:
    """Shade the periods an account spent in a state other than ACTIVE."""
    ordered = sorted(halts, key=lambda h: h.ts)
    for index, halt in enumerate(ordered):
        if halt.state == "ACTIVE":
            continue
        stop = ordered[index + 1].ts if index + 1 < len(ordered) else end
        colour = STATE_COLOURS.get(halt.state, OTHER_COLOUR)
        axes.axvspan(_x(halt.ts), _x(max(stop, halt.ts + 1)), color=colour, alpha=0.10, lw=0)
        axes.axvline(_x(halt.ts), color=colour, lw=1.0, ls="--", alpha=0.8)


def _equity_chart(collector: _Collector, shown: list[str], series: dict[str, _Series]) -> Figure:
    figure = _new_figure("report-equity.png", len(shown))
    if not shown:
        _no_data(figure.add_subplot(), "no accounts in this tape")
        return figure
    grid = figure.add_gridspec(len(shown) * 2, 1, height_ratios=[2.3, 1.0] * len(shown))
    end = collector.last or 0
    states_seen: set[str] = set()
    sharex: Axes | None = None
    for row, account_id in enumerate(shown):
        account, line = collector.accounts[account_id], series[account_id]
        top = figure.add_subplot(grid[2 * row], sharex=sharex)
        sharex = sharex or top
        bottom = figure.add_subplot(grid[2 * row + 1], sharex=sharex)
        states_seen.update(h.state for h in account.halts)
        stops = sum(1 for h in account.halts if h.state in ("HALTED", "SHUTDOWN"))
        change = (line.equity[-1] / line.equity[0] - 1.0) if line.equity.size and line.equity[0] else 0.0
        top.set_title(
            f"{account_id}   equity {_money(float(line.equity[-1])) if line.equity.size else '-'}"
            f" ({change:+.1%})   max drawdown {line.max_drawdown:.1%}   halts {stops}"
        )
        if line.ts.size == 0:
            _no_data(top, "no equity in the facts of this account's decisions or halts")
            _no_data(bottom, "")
        else:
            dates = _dates(line.ts)
            marker = "o" if line.ts.size <= 80 else None
            top.plot(dates, line.equity, color=EQUITY_COLOUR, lw=1.6, marker=marker, ms=2.5, drawstyle="steps-post")
            top.yaxis.set_major_formatter(FuncFormatter(_money))
            bottom.fill_between(dates, line.drawdown, 0.0, step="post", color="#c8423b", alpha=0.35, lw=0)
            bottom.plot(dates, line.drawdown, color="#9b2f29", lw=1.0, drawstyle="steps-post")
            bottom.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
            bottom.set_ylim(min(line.max_drawdown * 1.25, -0.005), 0.0015)
            for axes in (top, bottom):
                _state_spans(axes, account.halts, end)
            _halt_markers(top, bottom, account.halts, line)
        top.set_ylabel("equity")
        bottom.set_ylabel("drawdown\nfrom peak")
        bottom.yaxis.set_major_locator(MaxNLocator(nbins=3))
        top.tick_params(labelbottom=False)
        _time_axis(bottom, collector.first, collector.last)
    handles: list[Any] = [
        Line2D([], [], color=EQUITY_COLOUR, lw=1.6, label="equity (facts of decisions and halts)"),
        Patch(color="#c8423b", alpha=0.35, label="drawdown from running peak"),
    ]
    handles += [
        Line2D([], [], color=STATE_COLOURS.get(s, OTHER_COLOUR), marker="v", ls="--", label=f"state → {s}")
        for s in STATE_COLOURS
        if s in states_seen
    ]
    figure.legend(handles=handles, loc="outside upper center", ncols=len(handles))
    return figure


def _halt_markers(top: Axes, bottom: Axes, halts: Sequence[_HaltRow], line: _Series) -> None:
    labelled = 0
    for halt in sorted(halts, key=lambda h: h.ts):
        colour = STATE_COLOURS.get(halt.state, OTHER_COLOUR)
        when = _x(halt.ts)
        y = halt.equity if halt.equity is not None else float(np.interp(halt.ts, line.ts, line.equity))
        top.scatter([when], [y], marker="v", s=60, color=colour, edgecolors="black", linewidths=0.6, zorder=5)
        bottom.scatter(
            [when], [line.drawdown_at(halt.ts)], marker="v", s=40, color=colour, edgecolors="black", lw=0.6, zorder=5
        )
        if labelled < MAX_HALT_LABELS and halt.state != "ACTIVE":
            labelled += 1
            label = f"{halt.state}: {halt.reason}\n{_when(halt.ts)[:10]}"
            top.annotate(
                label,
                (when, y),
                xytext=(-12, 6),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=8,
                color=colour,
                fontweight="bold",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colour, "lw": 0.6, "alpha": 0.9},
            )


def _stacked(
    axes: Axes,
    starts: np.ndarray[Any, np.dtype[np.int64]],
    size: int,
    groups: dict[str, np.ndarray[Any, np.dtype[np.int64]]],
    colours: dict[str, str],
) -> None:
    dates = _dates(starts + size // 2)
    width = size / 86_400_000 * 0.8
    bottom = np.zeros(starts.size, dtype=np.int64)
    for name, counts in groups.items():
        if counts.sum() == 0:
            continue
        axes.bar(dates, counts, width=width, bottom=bottom, color=colours.get(name, OTHER_COLOUR), label=name, lw=0)
        bottom = bottom + counts
    axes.set_ylim(0, max(int(bottom.max()) if bottom.size else 1, 1) * 1.08)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
    axes.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0)


def _decisions_chart(collector: _Collector) -> Figure:
    figure = _new_figure("report-decisions.png", 1)
    panels = figure.subplots(3, 1, sharex=True)
    if not collector.dec_ts or collector.first is None or collector.last is None:
        for axes in panels:
            _no_data(axes, "no decisions in this tape")
        return figure
    size = _bucket(collector.first, collector.last)
    ts = np.array(collector.dec_ts, dtype=np.int64)
    bucket = ts // size
    base = int(bucket.min())
    index = bucket - base
    starts = (np.arange(int(index.max()) + 1, dtype=np.int64) + base) * size
    action = np.array(collector.dec_action)
    layer = np.array(collector.dec_layer)
    binding = np.isin(action, ("CLIP", "DENY"))

    def counts(
        values: np.ndarray[Any, Any], names: Iterable[str], keep: np.ndarray[Any, Any] | None = None
    ) -> dict[str, np.ndarray[Any, np.dtype[np.int64]]]:
        known = list(names)
        extra = sorted(set(values.tolist()) - set(known))
        chosen = np.ones(values.size, dtype=bool) if keep is None else keep
        return {
            n: np.bincount(index[(values == n) & chosen], minlength=starts.size).astype(np.int64) for n in known + extra
        }

    per = _bucket_label(size)
    _stacked(panels[0], starts, size, counts(action, ACTIONS), ACTION_COLOURS)
    _stacked(panels[1], starts, size, counts(layer, LAYERS), LAYER_COLOURS)
    _stacked(panels[2], starts, size, counts(layer, LAYERS, binding), LAYER_COLOURS)
    panels[0].set_title(f"Decisions per {per} by action")
    panels[1].set_title(f"Decisions per {per} by deciding layer")
    panels[2].set_title(f"CLIP and DENY per {per} by binding layer")
    if not binding.any():
        _no_data(panels[2], "no decision was clipped or denied")
    stops = sorted({h.ts for h in collector.halts if h.state in ("HALTED", "SHUTDOWN")})
    for axes in panels:
        axes.set_ylabel("decisions")
        for when in stops:
            axes.axvline(_x(when), color=STATE_COLOURS["HALTED"], lw=0.9, ls="--", alpha=0.7, zorder=0)
    if stops:
        panels[0].text(
            _x(stops[0]),
            panels[0].get_ylim()[1],
            " halt",
            color=STATE_COLOURS["HALTED"],
            fontsize=8,
            va="top",
            ha="left",
        )
    _time_axis(panels[2], collector.first, collector.last)
    return figure


def _clusters_chart(collector: _Collector, shown: list[str]) -> Figure:
    figure = _new_figure("report-clusters.png", len(shown))
    if not shown:
        _no_data(figure.add_subplot(), "no accounts in this tape")
        return figure
    axes_list = figure.subplots(len(shown), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    end = collector.last or 0
    peak = 0.0
    actions_seen: set[str] = set()
    for axes, account_id in zip(axes_list, shown, strict=True):
        account = collector.accounts[account_id]
        axes.set_ylabel("share of equity")
        if not account.cluster_ts:
            axes.set_title(f"{account_id}   cluster exposure")
            _no_data(axes, "no cluster facts in this account's decisions")
            continue
        ts = np.array(account.cluster_ts, dtype=np.int64)
        ratio = np.array(account.cluster_ratio, dtype=np.float64)
        cap = np.array(account.cluster_cap, dtype=np.float64)
        action = np.array(account.cluster_action)
        order = np.argsort(ts, kind="stable")
        ts, ratio, cap, action = ts[order], ratio[order], cap[order], action[order]
        capped = np.isfinite(cap)
        peak = max(peak, float(ratio.max()), float(cap[capped].max()) if capped.any() else 0.0)
        over = int(np.count_nonzero(capped & (ratio > cap)))
        axes.set_title(
            f"{account_id}   cluster exposure at each decision: peak {float(ratio.max()):.0%} of equity, "
            f"{over} decision{'s' if over != 1 else ''} over the cap"
        )
        for name in sorted(set(action.tolist()), key=lambda a: (ACTIONS.index(a) if a in ACTIONS else 9, a)):
            mask = action == name
            loud = name in ("CLIP", "DENY")
            actions_seen.add(name)
            axes.scatter(
                _dates(ts[mask]),
                ratio[mask],
                s=26 if loud else 12,
                color=ACTION_COLOURS.get(name, OTHER_COLOUR),
                alpha=0.95 if loud else 0.55,
                edgecolors="white" if loud else "none",
                linewidths=0.4,
                zorder=4 if loud else 3,
                rasterized=ts.size > 5000,
            )
        if capped.any():
            stamps, first_index = np.unique(ts[capped], return_index=True)
            axes.plot(
                _dates(stamps),
                cap[capped][first_index],
                color="black",
                lw=1.2,
                ls="--",
                drawstyle="steps-post",
                zorder=5,
            )
        _state_spans(axes, account.halts, end)
        axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    axes_list[0].set_ylim(-0.01, max(peak * 1.1, 0.05))
    _time_axis(axes_list[-1], collector.first, collector.last)
    handles: list[Any] = [Line2D([], [], color="black", lw=1.2, ls="--", label="cluster cap / equity")]
    handles += [
        Line2D([], [], color=ACTION_COLOURS.get(a, OTHER_COLOUR), marker="o", ls="", label=f"{a} decision")
        for a in sorted(actions_seen, key=lambda a: (ACTIONS.index(a) if a in ACTIONS else 9, a))
    ]
    states = sorted({h.state for a in shown for h in collector.accounts[a].halts} - {"ACTIVE"})
    handles += [Patch(color=STATE_COLOURS.get(s, OTHER_COLOUR), alpha=0.15, label=f"while {s}") for s in states]
    figure.legend(handles=handles, loc="outside upper center", ncols=len(handles))
    return figure


# --------------------------------------------------------------------------------------------------- html

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d232b}
main{max-width:1160px;margin:0 auto;padding:24px 20px 48px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:32px 0 10px;border-bottom:1px solid #d8dce2;padding-bottom:4px}
.sub{color:#5b6570;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px}
.card{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card .n{font-size:24px;font-weight:600}
.card .l{color:#5b6570;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card.bad{border-left:4px solid #c8423b}.card.warn{border-left:4px solid #e8a33d}.card.ok{border-left:4px solid #4c9a5b}
img{max-width:100%;height:auto;background:#fff;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
th,td{padding:5px 9px;border-bottom:1px solid #eceef1;text-align:left;vertical-align:top}
th{background:#eef0f3;font-weight:600}td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}
.pill{display:inline-block;padding:1px 7px;border-radius:9px;color:#fff;font-size:12px;font-weight:600}
.bar{height:10px;border-radius:3px;display:inline-block;vertical-align:middle}
.note{color:#5b6570;font-size:13px}code{font-size:12px}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _int(value: float) -> str:
    return f"{round(value):,}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _pill(state: str) -> str:
    colour = STATE_COLOURS.get(state, OTHER_COLOUR)
    return f'<span class="pill" style="background:{colour}">{_esc(state)}</span>'


def _card(label: str, number: str, detail: str = "", tone: str = "") -> str:
    extra = f'<div class="note">{detail}</div>' if detail else ""
    return f'<div class="card {tone}"><div class="l">{_esc(label)}</div><div class="n">{number}</div>{extra}</div>'


def _table(head: Sequence[tuple[str, bool]], rows: Iterable[Sequence[str]]) -> str:
    """`head` is (label, right-aligned); cells are already-escaped HTML."""
    header = "".join(f'<th class="r">{_esc(h)}</th>' if right else f"<th>{_esc(h)}</th>" for h, right in head)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="r">{cell}</td>' if right else f"<td>{cell}</td>"
            for cell, (_h, right) in zip(row, head, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(png: bytes, chart: ChartFile, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" width="{chart.width}" height="{chart.height}" alt="{_esc(alt)}">'


def _html(
    collector: _Collector,
    summary: ReportSummary,
    series: dict[str, _Series],
    shown: list[str],
    images: dict[str, str],
    title: str,
    source: str,
) -> str:
    total = max(summary.decisions, 1)
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="sub">{_esc(source)} · {_esc(_when(collector.first))} → {_esc(_when(collector.last))}'
        f" (event time, UTC) · {summary.lines:,} messages</p>",
        '<section id="summary"><h2>Summary</h2><div class="cards">',
        _card("decisions", _int(summary.decisions)),
        _card("allowed", _int(summary.allow), f"{summary.allow / total:.1%} of decisions", "ok"),
        _card(
            "clipped", _int(summary.clip), f"{summary.clip / total:.1%} of decisions", "warn" if summary.clip else ""
        ),
        _card("denied", _int(summary.deny), f"{summary.deny / total:.1%} of decisions", "bad" if summary.deny else ""),
        _card("no-op", _int(summary.noop), "inside the band / cadence"),
        _card("accounts", _int(len(summary.accounts)), _esc(", ".join(summary.accounts[:8]))),
        _card(
            "halted accounts",
            _int(len(summary.halted_accounts)),
            f"{summary.halts:,} state changes",
            "bad" if summary.halted_accounts else "ok",
        ),
        _card("dead letters", _int(summary.dead_letters), "bad input lines", "bad" if summary.dead_letters else "ok"),
        _card(
            "events",
            _int(summary.events),
            _esc(", ".join(f"{k} {n}" for k, n in sorted(collector.event_kinds.items()))),
        ),
        "</div>",
    ]
    if summary.unreadable:
        parts.append(f'<p class="note">{summary.unreadable:,} unreadable lines were skipped.</p>')
    parts.append("</section>")

    parts.append('<section id="equity"><h2>Equity and drawdown</h2>')
    parts.append(
        '<p class="note">Equity as carried in the facts of each decision and halt; drawdown from the running peak of '
        "those marks. Triangles and dashed lines are trading-state changes, shaded while the account is not ACTIVE.</p>"
    )
    if len(shown) < len(collector.accounts):
        parts.append(
            f'<p class="note">Charts show {len(shown)} of {len(collector.accounts)} accounts (halted and deepest '
            "drawdown first); the table lists all of them.</p>"
        )
    parts.append(images["report-equity.png"])
    account_rows = []
    for account_id in sorted(collector.accounts):
        account, line = collector.accounts[account_id], series[account_id]
        first = float(line.equity[0]) if line.equity.size else None
        last = float(line.equity[-1]) if line.equity.size else None
        change = (last / first - 1.0) if first and last is not None else None
        state = account.halts[-1].state if account.halts else "ACTIVE"
        account_rows.append(
            [
                f"<b>{_esc(account_id)}</b>",
                "-" if first is None else _int(first),
                "-" if last is None else _int(last),
                _pct(change),
                _pct(line.max_drawdown),
                _int(sum(1 for h in account.halts if h.state in ("HALTED", "SHUTDOWN"))),
                _pill(state),
                _int(sum(account.actions.values())),
                _int(account.actions["CLIP"]),
                _int(account.actions["DENY"]),
            ]
        )
    parts.append(
        _table(
            [
                ("account", False),
                ("first equity", True),
                ("last equity", True),
                ("change", True),
                ("max drawdown", True),
                ("halts", True),
                ("last state", False),
                ("decisions", True),
                ("CLIP", True),
                ("DENY", True),
            ],
            account_rows,
        )
    )
    parts.append("</section>")

    parts.append('<section id="halts"><h2>Halts and state changes</h2>')
    if collector.halts:
        parts.append(
            _table(
                [
                    ("time (UTC)", False),
                    ("account", False),
                    ("change", False),
                    ("reason", False),
                    ("until", False),
                    ("equity", True),
                    ("daily loss", True),
                    ("intraday drawdown", True),
                    ("total loss", True),
                ],
                (
                    [
                        _esc(_when(h.ts)),
                        f"<b>{_esc(h.account)}</b>",
                        f"{_pill(h.previous)} → {_pill(h.state)}",
                        f"<code>{_esc(h.reason)}</code>",
                        _esc(_until(h.until)),
                        "-" if h.equity is None else _int(h.equity),
                        _pct(h.daily_loss_pct),
                        _pct(h.intraday_drawdown_pct),
                        _pct(h.total_loss_pct),
                    ]
                    for h in sorted(collector.halts, key=lambda h: (h.ts, h.account))
                ),
            )
        )
    else:
        parts.append('<p class="note">No account changed trading state.</p>')
    parts.append("</section>")

    parts.append('<section id="decisions"><h2>Decisions over time</h2>')
    parts.append(images["report-decisions.png"])
    parts.append("</section>")

    parts.append('<section id="binding"><h2>Top binding layers and reasons</h2>')
    ranked = sorted(collector.binding.items(), key=lambda kv: (-(kv[1][0] + kv[1][1]), kv[0]))
    if ranked:
        most = ranked[0][1][0] + ranked[0][1][1]
        binding_rows = []
        for (layer, reason), (clips, denies, held) in ranked[:TOP_BINDING]:
            colour = LAYER_COLOURS.get(layer, OTHER_COLOUR)
            width = max(round(160 * (clips + denies) / most), 2)
            binding_rows.append(
                [
                    f'<span class="bar" style="width:10px;background:{colour}"></span> {_esc(layer)}',
                    f"<code>{_esc(reason)}</code>",
                    _int(clips),
                    _int(denies),
                    f'{_int(clips + denies)} <span class="bar" style="width:{width}px;background:{colour}"></span>',
                    _int(held),
                ]
            )
        parts.append(
            _table(
                [
                    ("layer", False),
                    ("reason", False),
                    ("CLIP", True),
                    ("DENY", True),
                    ("total", True),
                    ("notional held back", True),
                ],
                binding_rows,
            )
        )
        if len(ranked) > TOP_BINDING:
            parts.append(f'<p class="note">{len(ranked) - TOP_BINDING} more layer/reason pairs not shown.</p>')
    else:
        parts.append('<p class="note">No decision was clipped or denied.</p>')
    parts.append("</section>")

    parts.append('<section id="clusters"><h2>Cluster exposure</h2>')
    parts.append(
        '<p class="note">At each decision: the exposure of the decision\'s correlation cluster as a share of equity '
        "(dots, coloured by the decision's action) and the cluster cap in force (dashed). Dots above the line are "
        "clusters already past their cap (after price moves, or when correlations merge clusters): any addition "
        "to them is denied.</p>"
    )
    parts.append(images["report-clusters.png"])
    parts.append("</section>")

    parts.append('<section id="deadletters"><h2>Dead letters</h2>')
    if collector.dead_letters:
        parts.append(
            _table(
                [("source", False), ("key", False), ("error", False)],
                ([_esc(p), _esc(k), _esc(e[:300])] for p, k, e in collector.dead_letters[:MAX_DEAD_LETTER_ROWS]),
            )
        )
        if len(collector.dead_letters) > MAX_DEAD_LETTER_ROWS:
            parts.append(f'<p class="note">{len(collector.dead_letters) - MAX_DEAD_LETTER_ROWS:,} more not shown.</p>')
    else:
        parts.append('<p class="note">No bad input.</p>')
    parts.append("</section>")
    parts.append(
        f'<p class="note">riskguard report of <code>{_esc(source)}</code>; every time on this page is an event '
        "time from the tape.</p></main></body></html>\n"
    )
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------- entry point


def render_report(
    output_tape: Path,
    out_html: Path,
    png_dir: Path | None = None,
    title: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReportSummary:
    """Render `output_tape` (JSON Lines output envelopes) into one self-contained HTML page at `out_html`.

    The charts are embedded in the page as base64 PNGs and, when `png_dir` is given, also written there under
    `CHART_NAMES`.  `progress`, when given, is called with the number of bytes of the tape read so far (every
    `PROGRESS_EVERY` lines and once at the end, when it equals the file size).  Same tape, same bytes out.
    """
    collector = _Collector()
    consumed = 0
    with Path(output_tape).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            consumed += len(raw)
            stripped = raw.strip()
            if stripped:
                collector.add(stripped)
            if progress is not None and number % PROGRESS_EVERY == 0:
                progress(consumed)
    if progress is not None:
        progress(consumed)

    series = {account_id: _series(account) for account_id, account in collector.accounts.items()}
    shown = _chart_accounts(collector, series)
    pngs: dict[str, bytes] = {}
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(_RC)
        pngs["report-equity.png"] = _png(_equity_chart(collector, shown, series))
        pngs["report-decisions.png"] = _png(_decisions_chart(collector))
        pngs["report-clusters.png"] = _png(_clusters_chart(collector, shown))
    charts = tuple(ChartFile(name, *chart_size(name, len(shown))) for name in CHART_NAMES)

    actions: Counter[str] = Counter()
    for account in collector.accounts.values():
        actions.update(account.actions)
    summary = ReportSummary(
        lines=collector.lines,
        unreadable=collector.unreadable,
        decisions=collector.topics["decisions"],
        allow=actions["ALLOW"],
        clip=actions["CLIP"],
        deny=actions["DENY"],
        noop=actions["NOOP"],
        halts=collector.topics["halts"],
        events=collector.topics["events"],
        dead_letters=collector.topics["deadletter"],
        rebalance_runs=collector.topics["rebalance_runs"],
        accounts=tuple(sorted(a for a in collector.accounts if a != "?")),
        halted_accounts=tuple(sorted({h.account for h in collector.halts if h.state in ("HALTED", "SHUTDOWN")})),
        first_ts=format_ts(collector.first) if collector.first is not None else None,
        last_ts=format_ts(collector.last) if collector.last is not None else None,
        charts=charts,
    )
    alts = {
        "report-equity.png": "Equity and drawdown per account with trading-state changes",
        "report-decisions.png": "Decisions per time bucket by action and by deciding layer",
        "report-clusters.png": "Cluster exposure as a share of equity per account with the cluster cap",
    }
    images = {chart.name: _image(pngs[chart.name], chart, alts[chart.name]) for chart in charts}
    page = _html(
        collector, summary, series, shown, images, title or f"Risk report — {output_tape.name}", output_tape.name
    )
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(page, encoding="utf-8")
    if png_dir is not None:
        png_dir = Path(png_dir)
        png_dir.mkdir(parents=True, exist_ok=True)
        for name, data in pngs.items():
            (png_dir / name).write_bytes(data)
    return summary
