"""A session that exercises every rule of issue 15 at once: for the engine tests and the Kafka parity test.

Three accounts on one market (SPY, X at twice SPY's returns, Y, W and L):
- `beta`: the factor cap (`max_abs_beta_pct` 0.5) and a VaR entry quota;
- `cash`: buying power (cash × 2) and a margin entry quota;
- `book`: a signed REBALANCE with the momentum tilt, profit-take, today's-winners bias (one of three up:
  buys boosted) and a no-buy list.
"""

from __future__ import annotations

from streams.testing import TapeBuilder

KEY = b"seed-rules-key"

YAML = """
risk:
  clusters: {cap_pct: null, window: 5, min_periods: 3}
  factor: {benchmark: SPY, beta_window: 5, min_periods: 3}
  concentration: {position: [5, 5], group: [5, 5], cluster: [5, 5]}
  per_symbol: {band_pct: 0.0}
rebalance:
  tilt_mode: momentum
  tilt_strength: 0.5
  profit_take_threshold_pct: 0.2
  profit_take_boost_pct: 0.2
  today_bias: {high_pct: 0.7, low_pct: 0.34, boost_pct: 0.1}
  no_buy: [W]
  budget_pct: 1.0
  max_position_weight: 1.0
  min_trade_value: 0
accounts:
  beta:
    risk:
      factor: {max_abs_beta_pct: 0.5}
      account: {daily_entry_quota: {measure: var, pct: 0.05, confidence: 0.99}}
  cash:
    risk:
      account:
        buying_power: {multiplier: 2}
        daily_entry_quota: {measure: margin, pct: 0.1}
        margin_rates: {default: 0.25, overrides: {W: 0.5}}
"""

SPY_RETURNS = (0.01, -0.01, 0.02, -0.005, 0.01)


def tape() -> TapeBuilder:
    """The session: five days of bars, then trades on the sixth (2024-01-16)."""
    t = TapeBuilder()
    spy, x = [100.0], [50.0]
    for r in SPY_RETURNS:
        spy.append(spy[-1] * (1 + r))
        x.append(x[-1] * (1 + 2 * r))
    for day in range(6):
        ts = f"2024-01-{day + 10}T21:00:00Z"
        t.flat_bar("SPY", ts, spy[day]).flat_bar("X", ts, x[day])
        t.flat_bar("Y", ts, 20.0 + day).flat_bar("W", ts, 40.0 - day).flat_bar("L", ts, 10.0)
    for account in ("beta", "cash", "book"):
        t.equity(account, "2024-01-15T21:00:01Z", 100_000, cash=10_000)
    # beta: X (beta 2) up to the cap, a beta-1 short that lowers B, then buys into the cap.
    t.signal("beta", "X", "2024-01-16T14:01:00Z", price=x[-1], target_notional=40_000)
    t.signal("beta", "Y", "2024-01-16T14:02:00Z", price=25.0, target_notional=-20_000)
    t.signal("beta", "W", "2024-01-16T14:03:00Z", price=35.0, target_notional=50_000)
    # cash: buying power 20,000 and a margin quota of 10,000 (W at 50 %: 20,000 of notional).
    t.signal("cash", "W", "2024-01-16T14:01:00Z", price=35.0, target_notional=15_000)
    t.signal("cash", "L", "2024-01-16T14:02:00Z", price=10.0, target_notional=15_000)
    t.signal("cash", "Y", "2024-01-16T14:03:00Z", price=25.0, target_notional=-5_000)
    # book: a winner (Y, in at 10), a loser (W, in at 80), L flat at 10; a signed rebalance to 30 % each.
    t.fill("book", "Y", "BUY", 2_000, 10.0, "2024-01-16T14:00:00Z")
    t.fill("book", "W", "BUY", 100, 80.0, "2024-01-16T14:00:00Z")
    t.fill("book", "L", "BUY", 500, 10.0, "2024-01-16T14:00:00Z")
    t.control(
        "REBALANCE",
        "book",
        "2024-01-16T14:05:00Z",
        "rebalance-1",
        "2024-01-16T15:00:00Z",
        KEY,
        targets={"Y": 0.3, "W": 0.3, "L": 0.3},
    )
    return t
