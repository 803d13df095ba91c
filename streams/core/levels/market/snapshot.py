"""Level 2's snapshot: the partition-wide state under `@`, the cluster window under `@clusters`.

Why `@clusters` is apart and pre-serialised: the window (30 rows of returns per symbol, ~370 kB of JSON
for 500 symbols) changes once per bar timestamp while the worker stores Level 2 after every batch. The
same `bytes` object comes back until the window changes, and the worker skips a key whose bytes equal
the stored value, so an unchanged window costs neither a serialisation nor a write.
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.core.items import PARTITION_KEY
from streams.core.levels.market.atr import SymbolMarket
from streams.core.levels.market.clusters import ClusterState
from streams.core.levels.market.regime import ClassifierState
from streams.core.levels.market.stage import MarketStage

CLUSTERS_KEY = "@clusters"
Snapshot = dict[str, Any]


def dump_market(stage: MarketStage) -> dict[str, Snapshot | bytes]:
    """Level 2: the partition-wide snapshot, and the cluster window as cached JSON bytes."""
    st = stage.state
    return {
        PARTITION_KEY: {
            "cluster_pending": st.clusters.pending(),
            "symbols": {s: [m.last_ts, m.close, m.atr, m.tr_count, m.tr_sum] for s, m in st.symbols.items()},
            "published": st.published,
            "budget": {
                "closes": list(st.classifier.closes),
                "regime": st.classifier.regime,
                "correlation": st.correlation,
                "spike": st.spike,
            },
        },
        CLUSTERS_KEY: st.clusters.window_json(),
    }


def load_market(stage: MarketStage, key: str, data: Snapshot | bytes) -> None:
    """Restore one Level-2 key; `@` and `@clusters` may come in either order.

    Also reads the single-key format of earlier versions (the whole cluster state under `@`'s
    `clusters`), so tables written before the split restore to the same state.
    """
    st = stage.state
    if key == CLUSTERS_KEY:
        window = orjson.loads(data) if isinstance(data, bytes) else data
        # The pending bars came (or will come) with `@`: keep them across the rebuilt window.
        st.clusters = ClusterState.from_dict(st.clusters.params, {**window, **st.clusters.pending()})
        return
    snap: Snapshot = orjson.loads(data) if isinstance(data, bytes) else data
    if "clusters" in snap:
        st.clusters = ClusterState.from_dict(st.clusters.params, snap["clusters"])
    else:
        st.clusters.restore_pending(snap["cluster_pending"])
    st.symbols = {s: SymbolMarket(*values) for s, values in snap["symbols"].items()}
    st.published = dict(snap["published"])
    budget = snap.get("budget") or {}
    st.classifier = ClassifierState(list(budget.get("closes", ())), budget.get("regime"))
    st.correlation = budget.get("correlation")
    st.spike = bool(budget.get("spike", False))
