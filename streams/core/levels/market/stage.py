"""Level 2, the market stage: prices, Wilder ATR, the cluster map and the budget's market figures.

Market-wide (on bars), its state is one partition-wide snapshot (`snapshot.py`). Its rules sit
beside it: `atr.py` (Wilder ATR), `clusters.py` (correlation clusters), `regime.py` (the benchmark
classifier). A bar goes on to Level 1 with this level's notes (`atr`, and with the budget on
`market`: the regime reading and the correlation-spike edge); a changed cluster map goes on as a
`cluster_map` item for Level 4, and, when a rule needs them, each completed timestamp's risk figures
(`factor.py`: σ for the entry quota's VaR, betas to the factor benchmark) as a `market_figures` item.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from schemas.config import Config
from schemas.inputs import Bar
from schemas.outputs import RiskEvent
from streams.core.ids import stable_id
from streams.core.items import PARTITION_KEY, Item, Output, Result
from streams.core.levels.market.atr import SymbolMarket, update_atr
from streams.core.levels.market.clusters import ClusterMap, ClusterParams, ClusterState
from streams.core.levels.market.factor import betas, sigmas
from streams.core.levels.market.regime import ClassifierState, observe


def cluster_params(config: Config) -> ClusterParams:
    """The market-wide cluster parameters of the file's `risk.clusters`."""
    c = config.risk.clusters
    factor = config.risk.factor
    return ClusterParams(
        window=c.window,
        min_periods=c.min_periods,
        threshold=c.threshold,
        method=c.method,
        demean_market=c.demean_market,
        static=tuple((name, tuple(members)) for name, members in sorted(c.static.items())),
        history=factor.beta_window if factor.benchmark is not None else 0,
    )


def needs_sigma(config: Config) -> bool:
    """Whether any account's entry quota is measured by VaR (Level 2 then sends σ per symbol)."""
    rules = [config.risk_for(account) for account in sorted(config.accounts)] + [config.risk_for("")]
    return any(r.account.entry_quota is not None and r.account.entry_quota.measure == "var" for r in rules)


@dataclass(slots=True)
class MarketState:
    """Level-2 state of one partition: prices, ATR and the correlation clusters."""

    clusters: ClusterState
    symbols: dict[str, SymbolMarket] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)
    classifier: ClassifierState = field(default_factory=ClassifierState)
    correlation: float | None = None
    spike: bool = False


class MarketStage:
    """Level 2: prices, Wilder ATR, the cluster map and the budget's market figures, market-wide (on bars).

    It changes its state in place (why: `streams.core.items.Stage`); the pure decisions live in
    `atr.update_atr`, `ClusterState.on_bar`, `regime.observe`.
    """

    name = "market"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = MarketState(ClusterState(cluster_params(config)))
        self.stats: Counter[str] = Counter()
        self._atr_period = config.risk.sizing.atr_period
        self._benchmark = config.risk.factor.benchmark
        self._sigma = needs_sigma(config)
        self._budget_on = config.budget.enabled

    def process(self, item: Item) -> Result:
        if item.kind == "bar":
            return self._bar(item)
        return [], [item]

    def touched(self, item: Item, forwarded: list[Item]) -> set[str]:
        """Level 2's state is market-wide: its snapshot is whole, never by key."""
        return {PARTITION_KEY}

    def finish(self) -> Result:
        cmap = self.state.clusters.flush()
        return self._completed(cmap) if cmap is not None else ([], [])

    def _bar(self, item: Item) -> Result:
        bar: Bar = item.event  # type: ignore[assignment]  # a `bar` item carries a Bar (`items.item_for`)
        symbol, ts, close = bar.symbol, bar.ts, bar.close
        m = self.state.symbols.get(symbol)
        if m is None:
            m = SymbolMarket()
            self.state.symbols[symbol] = m
        if ts <= m.last_ts:
            self.stats["duplicates" if ts == m.last_ts else "out_of_order"] += 1
            return [], []
        update_atr(m, bar.high, bar.low, self._atr_period)
        m.last_ts, m.close = ts, close
        cmap = self.state.clusters.on_bar(symbol, ts, close)
        notes: dict[str, Any] = {"atr": m.atr}
        item.notes = notes  # the bar goes on with Level 2's notes only (an item per bar is not rebuilt)
        if cmap is None and not self._budget_on:
            return [], [item]
        outputs: list[Output] = []
        items: list[Item] = []
        if cmap is not None:
            outputs, items = self._completed(cmap)
        if self._budget_on:
            market, events = self._budget(bar, cmap)
            outputs += events
            if market:
                notes["market"] = market
        items.append(item)
        return outputs, items

    def _budget(self, bar: Bar, cmap: ClusterMap | None) -> tuple[dict[str, Any], list[Output]]:
        """The benchmark's regime reading and the correlation-spike edge, as a note for Level 1."""
        config = self.config.budget
        st = self.state
        market: dict[str, Any] = {}
        events: list[tuple[str, dict[str, Any]]] = []
        if bar.symbol == config.benchmark:
            previous = st.classifier.regime
            reading = observe(st.classifier, bar.close, config.classifier)
            if reading is not None:
                market["regime"] = {**reading.to_json(), "previous": previous}
                events.append(("market_regime", {"benchmark": bar.symbol, **market["regime"]}))
        if cmap is not None:
            st.correlation = st.clusters.market_correlation()
            threshold = config.rebalancing_triggers.correlation_spike
            active = st.correlation is not None and st.correlation >= threshold
            if active and not st.spike:
                spike = {"correlation": st.correlation, "threshold": threshold, "as_of": cmap.ts}
                market["correlation_spike"] = spike
                events.append(("correlation_spike", spike))
            st.spike = active
        outputs = [
            Output(
                "events",
                None,
                RiskEvent(event_id=stable_id("evt", kind, bar.ts), kind=kind, account=None, ts=bar.ts, details=details),
            )
            for kind, details in events
        ]
        return market, outputs

    def _completed(self, cmap: ClusterMap) -> Result:
        """A bar timestamp completed: the cluster map if it changed, and the risk figures if a rule needs them."""
        outputs, items = self._map(cmap)
        if self._sigma or self._benchmark is not None:
            items.append(self._figures(cmap.ts))
        return outputs, items

    def _figures(self, ts: int) -> Item:
        """σ per symbol (VaR quota) and beta per symbol (factor cap) of the window just completed."""
        clusters = self.state.clusters
        symbols = clusters.symbols
        notes: dict[str, Any] = {"ts": ts}
        if self._sigma:
            params = clusters.params
            values = sigmas(clusters.returns(params.window), params.min_periods).tolist()
            notes["sigma"] = {s: v for s, v in zip(symbols, values, strict=True) if v == v}  # NaN: unknown
        if self._benchmark is not None:
            factor = self.config.risk.factor
            bench = symbols.index(self._benchmark) if self._benchmark in symbols else None
            values = betas(clusters.returns(factor.beta_window), bench, factor.min_periods).tolist()
            notes["beta"] = dict(zip(symbols, values, strict=True))
        self.stats["market_figures"] += 1
        return Item("market_figures", None, None, notes)

    def _map(self, cmap: ClusterMap) -> Result:
        if cmap.assignment == self.state.published:
            return [], []
        self.state.published = dict(cmap.assignment)
        self.stats["cluster_maps"] += 1
        note = Item("cluster_map", None, None, {"version": cmap.version, "assignment": dict(cmap.assignment)})
        clusters = {cid: list(members) for cid, members in sorted(cmap.members.items()) if len(members) > 1}
        event = RiskEvent(
            event_id=stable_id("evt", "cluster_map", cmap.version, cmap.ts),
            kind="cluster_map",
            account=None,
            ts=cmap.ts,
            details={
                "version": cmap.version,
                "symbols": len(cmap.assignment),
                "clusters": clusters,
                "singletons": sum(1 for members in cmap.members.values() if len(members) == 1),
                "largest": max((len(m) for m in cmap.members.values()), default=0),
            },
        )
        return [Output("events", None, event)], [note]
