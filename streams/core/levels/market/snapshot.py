"""Level 2's snapshot: the partition-wide state under `@`, the cluster window under `@clusters` and
one key per row of returns, `@clusters|<slot>`.

Why the window is apart and pre-serialised: it changes once per bar timestamp while the worker stores
Level 2 after every batch. The same `bytes` objects come back until the window changes, and the worker
skips a key whose bytes equal the stored value, so an unchanged window costs neither a serialisation
nor a write. Why its rows have keys of their own: the window is 30 rows of returns per symbol (~370 kB
of JSON for 500 symbols) and a completed timestamp changes one row, so it writes the head (symbols,
last closes, version: ~13 kB for 500 symbols) and the one new row (~10 kB) instead of all of it. The
row numbered `n` (the map's version that added it) lives in slot `n % kept`; each row says its number,
so a restore finds the rows the head needs whatever the slot count was when they were written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import orjson

from streams.core.items import PARTITION_KEY
from streams.core.levels.market.atr import SymbolMarket
from streams.core.levels.market.clusters import ClusterState
from streams.core.levels.market.regime import ClassifierState
from streams.core.levels.market.stage import MarketStage

CLUSTERS_KEY = "@clusters"
ROW_PREFIX = CLUSTERS_KEY + "|"
Snapshot = dict[str, Any]


def row_key(number: int, kept: int) -> str:
    """The key of the window's row numbered `number`: its slot in a ring of `kept` rows."""
    return f"{ROW_PREFIX}{number % kept:03d}"


@dataclass
class _Parts:
    """What a restore has read of the cluster window so far: the head and the rows, by row number."""

    head: dict[str, Any] | None = None
    rows: dict[int, list[Any]] = field(default_factory=dict)


_restoring: WeakKeyDictionary[MarketStage, _Parts] = WeakKeyDictionary()


def dump_market(stage: MarketStage) -> dict[str, Snapshot | bytes]:
    """Level 2: the partition-wide snapshot, and the cluster window's head and rows as cached JSON bytes."""
    st = stage.state
    kept = st.clusters.params.kept
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
        CLUSTERS_KEY: st.clusters.head_json(),
        **{row_key(number, kept): row for number, row in st.clusters.rows_json().items()},
    }


def load_market(stage: MarketStage, key: str, data: Snapshot | bytes) -> None:
    """Restore one Level-2 key; `@` and `@clusters` may come in either order.

    Also reads the single-key format of earlier versions (the whole cluster state under `@`'s
    `clusters`), so tables written before the split restore to the same state.
    """
    st = stage.state
    if key == CLUSTERS_KEY or key.startswith(ROW_PREFIX):
        value = orjson.loads(data) if isinstance(data, bytes) else data
        if key == CLUSTERS_KEY and "returns" in value:  # the whole window under one key (earlier versions)
            # The pending bars came (or will come) with `@`: keep them across the rebuilt window.
            st.clusters = ClusterState.from_dict(st.clusters.params, {**value, **st.clusters.pending()})
            return
        parts = _restoring.setdefault(stage, _Parts())
        if key == CLUSTERS_KEY:
            parts.head = value
        else:
            parts.rows[int(value["row"])] = list(value["returns"])
        if parts.head is not None:  # the rows may come before or after the head
            built = ClusterState.from_parts(st.clusters.params, parts.head, parts.rows, st.clusters.pending())
            if built is not None:
                st.clusters = built
                del _restoring[stage]
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
