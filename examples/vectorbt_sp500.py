"""vectorbt with the guard in the loop (seed 000 Approach 1), on the real S&P 500 bars of ../shared/data.

The same equal-weight book of every S&P 500 constituent (2 Jan - 7 Feb 2018, through the 5 Feb sell-off),
its target weights repeated every day, three ways:

- raw: `vbt.Portfolio.from_orders(size=targets, size_type="targetpercent")`, rebalanced to the targets daily;
- naive stops: vectorbt's own 8 % stop-loss (`from_signals(sl_stop=0.08)`) on the same targets: a stopped
  symbol is bought back on the next bar because its target is still non-zero (the re-entry paradox);
- guarded: `streams.backtest.run_frame` (the engine of `riskguard replay`: 5 % stop-loss, re-entry veto until
  the next rebalance, 3 % daily-loss halt with flatten), its fills replayed by vectorbt through `to_vectorbt`.

    python examples/vectorbt_sp500.py [--data ../shared/data] [--png docs/img/backtesting_sp500.png]

prints the figures (equity, drawdown, trades, halts, stop-outs, re-entries) as a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python examples/vectorbt_sp500.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import vectorbt as vbt

from streams.backtest import BacktestResult, read_bars_csv, run_frame, to_vectorbt

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CSV = "sp500_daily_2018-01-02_2018-02-07.csv"
INITIAL = 1_000_000.0
GROSS = 0.98  # of equity: room for the commission, vectorbt does not lend
COMMISSION_BPS = 1.0
STOP = 0.08
CONFIG: dict[str, Any] = {
    "risk": {
        "account": {"daily_loss": {"limit_pct": 0.03, "of": "day_start", "basis": "equity"}},
        "stops": {"default": {"stop_loss_pct": STOP}, "reentry": "until_rebalance"},
        # The seed's components clustering puts 464 of 505 symbols in one cluster on this window
        # (../shared/data/README.md): a 25 % cluster cap would cap the whole book; off here.
        "clusters": {"cap_pct": None},
    }
}


def equal_weight(bars: pd.DataFrame, gross: float = GROSS) -> pd.DataFrame:
    """Dense targets: every symbol at gross / N on every day."""
    close = bars.pivot(index="ts", columns="symbol", values="close")
    return pd.DataFrame(gross / close.shape[1], index=close.index, columns=close.columns)


@dataclass
class Comparison:
    """The three runs and their figures."""

    raw: Any
    naive: Any
    guarded: Any
    result: BacktestResult
    figures: pd.DataFrame
    reentries: pd.DataFrame
    vetoed: pd.DataFrame


def _reentries(naive: Any) -> pd.DataFrame:
    """Naive stops: each buy of a symbol after vectorbt's own stop exit sold it (symbol, exit, re-entry)."""
    orders = naive.orders.records_readable
    rows = []
    for symbol, group in orders.groupby("Column", sort=True):
        sides = list(group["Side"])
        stamps = list(group["Timestamp"])
        for n in range(1, len(sides)):
            if sides[n] == "Buy" and sides[n - 1] == "Sell":
                rows.append((symbol, stamps[n - 1], stamps[n]))
    return pd.DataFrame(rows, columns=["symbol", "stopped", "rebought"])


def _vetoed(result: BacktestResult, targets: pd.DataFrame) -> pd.DataFrame:
    """Guarded: each stopped symbol, when, the days its target stayed non-zero after, and its buys after."""
    ledger = result.ledger
    rows = []
    for _, stop in ledger[ledger["origin"] == "stop_loss"].iterrows():
        symbol, when = stop["symbol"], stop["ts"]
        days = int((targets.loc[targets.index > when, symbol].fillna(0) != 0).sum())
        later = ledger[(ledger["symbol"] == symbol) & (ledger["ts"] > when)]
        buys = int(((later["side"] == "BUY") & later["action"].isin(["ALLOW", "CLIP"])).sum())
        refused = int((later["origin"] == "signal").sum())
        rows.append((symbol, when, stop["price"], days, refused, buys))
    return pd.DataFrame(rows, columns=["symbol", "stopped", "stop_price", "target_days_after", "signals_held", "buys"])


def guarded_value(portfolio: Any, result: BacktestResult) -> pd.Series:
    """vectorbt's value of the guarded fills at the result's timestamps (its extra rows split same-bar fills)."""
    value: pd.Series = portfolio.value().reindex(result.equity.index)
    return value


def _figures(name: str, value: pd.Series, trades: int, halts: str) -> dict[str, Any]:
    drawdown = value / value.cummax() - 1.0
    return {
        "run": name,
        "final equity": round(float(value.iloc[-1]), 2),
        "return %": round(100 * (float(value.iloc[-1]) / INITIAL - 1), 2),
        "max drawdown %": round(100 * float(drawdown.min()), 2),
        "equity on 5 Feb": round(float(value.loc[pd.Timestamp("2018-02-05", tz="UTC")]), 2)
        if pd.Timestamp("2018-02-05", tz="UTC") in value.index
        else None,
        "trades": trades,
        "halts": halts,
    }


def compare(bars: pd.DataFrame, targets: pd.DataFrame | None = None, config: dict[str, Any] = CONFIG) -> Comparison:
    """Raw, naive-stop and guarded runs of the same targets on the same bars."""
    targets = equal_weight(bars) if targets is None else targets
    wide = {k: bars.pivot(index="ts", columns="symbol", values=k) for k in ("open", "high", "low", "close")}
    fees = COMMISSION_BPS / 10_000
    common = {"init_cash": INITIAL, "cash_sharing": True, "group_by": True, "call_seq": "auto", "freq": "1D"}
    raw = vbt.Portfolio.from_orders(close=wide["close"], size=targets, size_type="targetpercent", fees=fees, **common)
    naive = vbt.Portfolio.from_signals(
        close=wide["close"],
        open=wide["open"],
        high=wide["high"],
        low=wide["low"],
        entries=targets.fillna(0) > 0,
        exits=False,
        sl_stop=STOP,
        size=targets * INITIAL,
        size_type="value",
        fees=fees,
        **common,
    )
    result = run_frame(bars, targets, config, initial_balance=INITIAL, commission_bps=COMMISSION_BPS)
    guarded = vbt.Portfolio.from_orders(**to_vectorbt(result))
    halts = result.halts[result.halts["state"].isin(["HALTED", "SHUTDOWN"])]
    halt_days = ", ".join(f"{ts:%d %b}" for ts in halts["ts"]) or "none"
    figures = pd.DataFrame(
        [
            _figures("raw targets", raw.value(), int(raw.orders.count()), "-"),
            _figures("vectorbt 8 % stops", naive.value(), int(naive.orders.count()), "-"),
            _figures("guarded (riskguard)", guarded_value(guarded, result), int(guarded.orders.count()), halt_days),
        ]
    ).set_index("run")
    return Comparison(raw, naive, guarded, result, figures, _reentries(naive), _vetoed(result, targets))


def plot(comparison: Comparison, path: Path) -> None:
    """Equity and drawdown of the three runs, with the guard's halts marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, height_ratios=[2, 1])
    runs = (
        ("raw targets", comparison.raw.value(), "tab:gray"),
        ("vectorbt 8 % stops (re-entry paradox)", comparison.naive.value(), "tab:orange"),
        ("guarded by riskguard", guarded_value(comparison.guarded, comparison.result), "tab:blue"),
    )
    for label, value, color in runs:
        index = pd.DatetimeIndex(value.index).tz_localize(None)
        top.plot(index, value.to_numpy() / 1e6, label=label, color=color)
        bottom.plot(index, 100 * (value / value.cummax() - 1).to_numpy(), color=color)
    halts = comparison.result.halts
    for ts in halts.loc[halts["state"].isin(["HALTED", "SHUTDOWN"]), "ts"]:
        for axis in (top, bottom):
            axis.axvline(ts.tz_localize(None), color="tab:red", linestyle="--", linewidth=1)
        top.annotate(
            "halt: daily loss 3 % ", (ts.tz_localize(None), top.get_ylim()[1]), color="tab:red", fontsize=8, ha="right"
        )
    top.set_ylabel("equity (million)")
    top.set_title("S&P 500 equal-weight book, Jan-Feb 2018: raw vs naive stops vs guarded")
    top.legend(loc="lower left", fontsize=8)
    bottom.set_ylabel("drawdown %")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="the directory of the S&P 500 CSV")
    parser.add_argument("--png", type=Path, default=None, help="write the equity/drawdown picture here")
    args = parser.parse_args(argv)
    comparison = compare(read_bars_csv(args.data / CSV))
    print(comparison.figures.to_markdown() if _has_tabulate() else comparison.figures.to_string())
    reentries = comparison.reentries
    print(
        f"\nvectorbt 8 % stops: {len(reentries)} re-entries of {reentries['symbol'].nunique()} stopped symbols, "
        "each bought back on the bar after its stop because the target was still non-zero"
    )
    vetoed = comparison.vetoed
    print(
        f"guarded: {len(vetoed)} stop-outs, {int(vetoed['buys'].sum())} buys after them; "
        f"{int(vetoed['signals_held'].sum())} signals of stopped symbols held (NOOP/DENY) over "
        f"{int(vetoed['target_days_after'].sum())} symbol-days of non-zero targets"
    )
    print(vetoed.head(10).to_string(index=False))
    if args.png is not None:
        plot(comparison, args.png)
        print(f"\npicture: {args.png}")
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
