"""Level-2 correlation clusters (SPEC §6.2), after seed 003's CorrelationMatrix.

Seed rule: for each pair of symbols, ``rho = pearson(returns1, returns2)``; if ``|rho| >= 0.7`` the two
are clustered together (the seed walks the links by BFS, i.e. connected components). Here the rule runs
market-wide on rolling simple returns of bar closes, vectorised with numpy (no per-pair Python loops),
with two alternatives to the BFS chaining (average / complete linkage, cut at distance ``1 - threshold``
on ``1 - |rho|``), an optional market demeaning, and static clusters that always override.

Pure and deterministic: no I/O, no clock; the state serialises to JSON-ready data and back exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import squareform

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

METHODS = ("components", "average", "complete")
DYNAMIC_PREFIX = "c:"
STATIC_PREFIX = "s:"

# A pairwise sum of squared deviations at or below this is a constant series (rounding noise only);
# real daily or intraday returns are many orders of magnitude above it.
_MIN_SUM_SQ = 1e-20
# Elements per temporary block in the masked (missing-data) path: about 256 kB of float64.
_BLOCK_ELEMENTS = 32_768
# Multiply-adds per BLAS call. OpenBLAS hands a GEMM to its thread pool above about 5e5 of them; on a
# busy 2-core box the hand-off then costs 10-100x the arithmetic (measured: 8 ms to 200 ms instead of
# 0.4 ms for 500 x 30 x 500), so the products are issued in row blocks that each stay single-threaded.
_BLAS_CHUNK = 400_000


@dataclass(frozen=True)
class ClusterParams:
    """Parameters of the Level-2 clustering (the ``clusters`` block of the config)."""

    window: int = 30
    min_periods: int = 20
    threshold: float = 0.7
    method: str = "components"
    demean_market: bool = False
    static: tuple[tuple[str, tuple[str, ...]], ...] = ()
    history: int = 0  # rows of returns kept beyond `window` (the factor's `beta_window`)

    @property
    def kept(self) -> int:
        """Rows of returns the state keeps: the correlation window, or more for the betas."""
        return max(self.window, self.history)

    def __post_init__(self) -> None:
        # Fail at configuration time rather than silently never linking anything.
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        if not 2 <= self.min_periods <= self.window:
            raise ValueError(f"min_periods must be in [2, window={self.window}], got {self.min_periods}")
        if not (math.isfinite(self.threshold) and 0.0 < self.threshold <= 1.0):
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        names: set[str] = set()
        seen: dict[str, str] = {}
        for name, members in self.static:
            if not name or name in names:
                raise ValueError(f"static cluster names must be non-empty and unique, got {name!r}")
            names.add(name)
            if not members:
                raise ValueError(f"static cluster {name!r} has no members")
            for symbol in members:
                if symbol in seen:
                    raise ValueError(f"symbol {symbol!r} is in static clusters {seen[symbol]!r} and {name!r}")
                seen[symbol] = name


@dataclass
class ClusterMap:
    """A published cluster assignment; ids are ``c:<smallest member>`` or ``s:<static name>``."""

    version: int
    ts: int
    assignment: dict[str, str]
    members: dict[str, tuple[str, ...]]

    def cluster_of(self, symbol: str) -> str:
        """Cluster id of `symbol`; an unknown symbol is its own singleton."""
        return self.assignment.get(symbol, DYNAMIC_PREFIX + symbol)


class ClusterState:
    """Rolling returns of the whole market, the latest correlation matrix and cluster map."""

    def __init__(self, params: ClusterParams) -> None:
        self.params = params
        self._static_of: dict[str, str] = {s: name for name, members in params.static for s in members}
        self._symbols: list[str] = []  # stable index: order of first completed timestamp, sorted within it
        self._index: dict[str, int] = {}
        self._last_close: FloatArray = np.empty(0, dtype=np.float64)
        self._returns: FloatArray = np.empty((0, 0), dtype=np.float64)  # rows = timestamps, cols = symbols
        self._pending_ts: int | None = None
        self._pending: dict[str, float] = {}
        self._last_ts: int | None = None  # last completed timestamp
        self._rho: FloatArray | None = None  # NaN where the pair has no valid rho
        self._map = self._build_map(0, 0, None)
        self._revision = 0  # bumped whenever `window()` changes
        self._head_json: tuple[int, bytes] | None = None  # (revision, bytes) of the last `head_json`
        self._row_json: dict[int, tuple[int, bytes]] = {}  # row number -> (columns, bytes) of `rows_json`

    # ----------------------------------------------------------------- input

    def on_bar(self, symbol: str, ts: int, close: float) -> ClusterMap | None:
        """Take one bar; return the new map when it completes the pending timestamp, else None."""
        if not 0.0 < close < math.inf:  # finite and > 0 (NaN fails the comparison)
            raise ValueError(f"close must be finite and > 0, got {close!r} for {symbol!r}")
        pending_ts = self._pending_ts
        if pending_ts == ts:  # the common case: another bar of the pending timestamp
            self._pending[symbol] = float(close)
            return None
        if (self._last_ts is not None and ts <= self._last_ts) or (pending_ts is not None and ts < pending_ts):
            return None  # late bar: its timestamp's row is already (being) superseded
        result: ClusterMap | None = None
        if pending_ts is not None and ts > pending_ts:
            result = self._complete()
        self._pending_ts = ts
        self._pending[symbol] = float(close)
        return result

    def flush(self) -> ClusterMap | None:
        """Complete the pending timestamp now (end of a tape); None if nothing is pending."""
        if self._pending_ts is None:
            return None
        return self._complete()

    # ---------------------------------------------------------------- output

    @property
    def current(self) -> ClusterMap:
        """Latest map (version 0, static clusters and no dynamic ones, before any recompute)."""
        return self._map

    def correlation(self, a: str, b: str) -> float | None:
        """Latest pairwise rho of `a` and `b`, or None when unknown or not enough common returns."""
        i, j = self._index.get(a), self._index.get(b)
        if self._rho is None or i is None or j is None:
            return None
        value = float(self._rho[i, j])
        return value if math.isfinite(value) else None

    def mean_abs_correlation(self, symbols: Iterable[str]) -> float | None:
        """Mean |rho| over distinct pairs of `symbols` with a valid rho; None if there is no such pair."""
        if self._rho is None:
            return None
        idx = np.array(sorted({self._index[s] for s in symbols if s in self._index}), dtype=np.intp)
        if idx.size < 2:
            return None
        sub = self._rho[np.ix_(idx, idx)]
        upper = sub[np.triu_indices(idx.size, k=1)]
        valid = upper[np.isfinite(upper)]
        if valid.size == 0:
            return None
        return float(np.mean(np.abs(valid)))

    def market_correlation(self) -> float | None:
        """Mean |rho| over every distinct pair with a valid rho (the correlation-spike statistic)."""
        if self._rho is None:
            return None
        magnitude = np.abs(self._rho)
        finite = np.isfinite(magnitude)
        diagonal = np.isfinite(np.diagonal(magnitude))
        pairs = int(np.count_nonzero(finite)) - int(np.count_nonzero(diagonal))
        if pairs <= 0:
            return None
        total = float(np.sum(magnitude, where=finite)) - float(np.count_nonzero(diagonal))
        return total / pairs

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols in column order of `returns`."""
        return tuple(self._symbols)

    def returns(self, rows: int) -> FloatArray:
        """The last `rows` rows of simple returns (timestamps x symbols, NaN where a symbol has none)."""
        return self._returns[-rows:] if rows > 0 else self._returns[:0]

    # ------------------------------------------------------------ persistence

    @property
    def revision(self) -> int:
        """Changes whenever `window()` does (a completed timestamp); a pending bar leaves it alone."""
        return self._revision

    def to_dict(self) -> dict[str, object]:
        """JSON-ready snapshot (NaN encoded as None); `from_dict` restores it exactly."""
        return {**self.window(), **self.pending()}

    def window(self) -> dict[str, object]:
        """The bulk of the snapshot (returns, last closes, the map's version), fixed between completions.

        Kept apart from `pending` so a store can skip it while the same timestamp's bars come in.
        """
        return {
            "symbols": list(self._symbols),
            "last_close": [_enc(x) for x in self._last_close.tolist()],
            "returns": [[_enc(x) for x in row] for row in self._returns.tolist()],
            "last_ts": self._last_ts,
            "version": self._map.version,
            "ts": self._map.ts,
        }

    def head_json(self) -> bytes:
        """The window without its rows of returns, as JSON bytes, serialised once per revision.

        `rows` is how many rows the window holds: the last ones up to row number `version` (the map's
        version counts completed timestamps, one row each), so the rows are those numbered
        `version - rows + 1` to `version` (`rows_json`).
        """
        cached = self._head_json
        if cached is None or cached[0] != self._revision:
            head = {
                "symbols": list(self._symbols),
                "last_close": [_enc(x) for x in self._last_close.tolist()],
                "rows": int(self._returns.shape[0]),
                "last_ts": self._last_ts,
                "version": self._map.version,
                "ts": self._map.ts,
            }
            cached = self._head_json = (self._revision, orjson.dumps(head))
        return cached[1]

    def rows_json(self) -> dict[int, bytes]:
        """Each row of returns in the window as JSON bytes (`{"row": n, "returns": [...]}`), by row number.

        A row's bytes are serialised once, and again only when a new symbol widens every row; so a
        completed timestamp serialises one row, not the window (~370 kB for 500 symbols).
        """
        count, columns = self._returns.shape
        first = self._map.version - count + 1
        cache = self._row_json
        rows: dict[int, bytes] = {}
        for i in range(count):
            number = first + i
            cached = cache.get(number)
            if cached is None or cached[0] != columns:
                row = [_enc(x) for x in self._returns[i].tolist()]
                cached = cache[number] = (columns, orjson.dumps({"row": number, "returns": row}))
            rows[number] = cached[1]
        for number in [n for n in cache if n < first]:
            del cache[number]
        return rows

    @classmethod
    def from_parts(
        cls, params: ClusterParams, head: dict[str, object], rows: dict[int, list[object]], pending: dict[str, object]
    ) -> ClusterState | None:
        """Rebuild a state from `head_json` and the `rows_json` rows (by row number), or None while a row
        the head needs is missing. A row written before a symbol was added lacks its column (NaN)."""
        count, version = _int(head["rows"]), _int(head["version"])
        numbers = range(version - count + 1, version + 1)
        if any(number not in rows for number in numbers):
            return None
        width = len(_list(head["symbols"]))
        returns = [[*rows[n], *([None] * (width - len(rows[n])))] for n in numbers]
        window = {key: value for key, value in head.items() if key != "rows"}
        return cls.from_dict(params, {**window, "returns": returns, **pending})

    def pending(self) -> dict[str, object]:
        """The bars of the timestamp not yet completed: small, and changed by every bar."""
        return {
            "pending_ts": self._pending_ts,
            "pending": [[s, self._pending[s]] for s in sorted(self._pending)],
        }

    def restore_pending(self, data: dict[str, object]) -> None:
        """Set the pending timestamp from `pending()` output; the window (and `revision`) is untouched."""
        self._pending_ts = _opt_int(data["pending_ts"])
        self._pending = {_str(p[0]): _float(p[1]) for p in (_list(x) for x in _list(data["pending"]))}

    @classmethod
    def from_dict(cls, params: ClusterParams, data: dict[str, object]) -> ClusterState:
        """Rebuild a state from `to_dict` output; rho and the map are recomputed from the same inputs."""
        state = cls(params)
        symbols = [_str(s) for s in _list(data["symbols"])]
        if len(set(symbols)) != len(symbols):
            raise ValueError("duplicate symbols in snapshot")
        n = len(symbols)
        last_close = np.array([_dec(x) for x in _list(data["last_close"])], dtype=np.float64)
        rows = [[_dec(x) for x in _list(row)] for row in _list(data["returns"])]
        if last_close.shape != (n,) or any(len(row) != n for row in rows):
            raise ValueError("snapshot arrays do not match the symbol list")
        state._symbols = symbols
        state._index = {s: i for i, s in enumerate(symbols)}
        state._last_close = last_close
        returns = np.array(rows, dtype=np.float64).reshape(len(rows), n)
        state._returns = returns[-params.kept :]
        state.restore_pending(data)
        state._last_ts = _opt_int(data["last_ts"])
        version, ts = _int(data["version"]), _int(data["ts"])
        # The returns only change at a recompute, so recomputing now reproduces the published map.
        state._rho = None if version == 0 else _correlation(state._returns[-params.window :], params)
        state._map = state._build_map(version, ts, state._rho)
        return state

    # -------------------------------------------------------------- internals

    def _complete(self) -> ClusterMap:
        """Turn the pending timestamp into one row of returns and recompute the map."""
        ts = self._pending_ts
        if ts is None:  # pragma: no cover - callers check
            raise RuntimeError("no pending timestamp")
        self._revision += 1  # first: whatever happens below, a cached `head_json` is stale now
        # Register new symbols sorted, so the internal index never depends on arrival order.
        new = sorted(s for s in self._pending if s not in self._index)
        if new:
            self._index.update({s: len(self._symbols) + k for k, s in enumerate(new)})
            self._symbols.extend(new)
            self._last_close = np.concatenate([self._last_close, np.full(len(new), np.nan)])
            pad = np.full((self._returns.shape[0], len(new)), np.nan)
            self._returns = np.hstack([self._returns, pad])
        closes = np.full(len(self._symbols), np.nan)
        closes[[self._index[s] for s in self._pending]] = list(self._pending.values())
        with np.errstate(invalid="ignore"):
            row = closes / self._last_close - 1.0  # NaN without a bar now or without a previous close
        self._last_close = np.where(np.isnan(closes), self._last_close, closes)
        self._returns = np.vstack([self._returns, row[np.newaxis, :]])[-self.params.kept :]
        self._last_ts, self._pending_ts, self._pending = ts, None, {}
        self._rho = _correlation(self._returns[-self.params.window :], self.params)
        self._map = self._build_map(self._map.version + 1, ts, self._rho)
        return self._map

    def _build_map(self, version: int, ts: int, rho: FloatArray | None) -> ClusterMap:
        """Cluster the symbols on `rho`, then lay the static clusters over the result."""
        n = len(self._symbols)
        if rho is None:
            labels = np.arange(n, dtype=np.intp)
        elif self.params.method == "components":
            labels = _labels(rho, np.empty(0, dtype=np.intp), self.params)  # components need no name order
        else:
            name_rank = np.argsort(np.argsort(np.array(self._symbols, dtype=object)))
            labels = _labels(rho, np.asarray(name_rank, dtype=np.intp), self.params)
        groups: dict[int, list[str]] = {}
        for symbol, label in zip(self._symbols, labels.tolist(), strict=True):
            if symbol not in self._static_of:  # static members leave; the rest of their group stays
                groups.setdefault(label, []).append(symbol)
        members: dict[str, tuple[str, ...]] = {}
        for group in groups.values():
            ordered = tuple(sorted(group))
            members[DYNAMIC_PREFIX + ordered[0]] = ordered
        for name, static_members in self.params.static:
            members[STATIC_PREFIX + name] = tuple(sorted(set(static_members)))
        members = dict(sorted(members.items()))
        assignment = dict(sorted((s, cid) for cid, group in members.items() for s in group))
        return ClusterMap(version=version, ts=ts, assignment=assignment, members=members)


def _correlation(returns: FloatArray, params: ClusterParams) -> FloatArray:
    """Pairwise-complete Pearson matrix of the columns of `returns`; NaN where a pair is not valid."""
    # Timestamps where no symbol has a return (the first one, for instance) add nothing to any pair;
    # dropping them lets columns with a return at every other timestamp take the fast path below.
    valid_all = np.isfinite(returns)
    live = valid_all.any(axis=1)
    x, valid = (returns, valid_all) if live.all() else (returns[live], valid_all[live])
    rows, n = x.shape
    if rows < params.min_periods:
        return np.full((n, n), np.nan)  # no pair can have min_periods common returns yet
    if params.demean_market:
        # Remove the common market move of each timestamp so sector structure shows through.
        row_n = valid.sum(axis=1, keepdims=True)
        x = x - np.where(valid, x, 0.0).sum(axis=1, keepdims=True) / np.maximum(row_n, 1)
    m = valid.astype(np.float64)
    col_n = m.sum(axis=0)
    # Centre each column on its own mean: the pairwise formula is shift-invariant per column, and
    # centring avoids cancellation in the sums of squares. Missing returns become 0 (they add nothing).
    col_mean = np.where(valid, x, 0.0).sum(axis=0) / np.maximum(col_n, 1.0)
    d = np.where(valid, x - col_mean, 0.0)
    d2 = d * d
    col_ss = d2.sum(axis=0)
    col_sum = d.sum(axis=0)  # ~0 by construction; kept exact rather than assumed
    usable = (col_n >= params.min_periods) & (col_ss > _MIN_SUM_SQ)
    full = col_n == rows

    # One product of unit-norm columns. Between two columns with a return at every row the common rows
    # are all rows, so this is already rho (the common case). For a column with gaps it is the raw
    # co-moment over the common rows, scaled: the rows below correct it for the missing rows.
    scale = np.zeros(n)
    np.divide(1.0, np.sqrt(col_ss, where=usable, out=np.ones(n)), where=usable, out=scale)
    z = d * scale
    rho = np.empty((n, n))
    _gram(z, rho)

    partial = np.flatnonzero(~full & usable)
    if partial.size:
        stats = _ColumnStats(
            n=col_n,
            total=col_sum,
            sum_sq=col_ss,
            root_ss=np.sqrt(col_ss),
            partial=partial,
            missing=(~valid).astype(np.float64),
            stacked=np.concatenate([m, d, d2], axis=1),
            d=d,
            d2=d2,
        )
        # Row blocks of a few hundred kB keep the temporaries small: fresh multi-MB buffers cost more in
        # page faults than the arithmetic on them.
        step = max(1, _BLOCK_ELEMENTS // (3 * n))
        for start in range(0, partial.size, step):
            block = partial[start : start + step]
            rho[block, :] = _masked_rows(rho[block, :], stats, block, params.min_periods)
        # Row k was computed as "k against j"; mirror it so the matrix is exactly symmetric (the pairs
        # between two partial columns were computed twice and may differ in the last bit: average).
        cross = rho[np.ix_(partial, partial)]
        rho[:, partial] = rho[partial, :].T
        rho[np.ix_(partial, partial)] = 0.5 * (cross + cross.T)

    unusable = np.flatnonzero(~usable)
    rho[unusable, :] = np.nan
    rho[:, unusable] = np.nan
    np.clip(rho, -1.0, 1.0, out=rho)
    rho[np.diag_indices(n)] = np.where(usable, 1.0, np.nan)
    return rho


@dataclass(frozen=True)
class _ColumnStats:
    """Per-column sums over each column's own returns (missing returns are 0 in `d` and `d2`)."""

    n: FloatArray
    total: FloatArray
    sum_sq: FloatArray
    root_ss: FloatArray
    partial: IntArray  # usable columns with a gap
    missing: FloatArray  # 1 where a return is missing
    stacked: FloatArray  # [mask | d | d2]
    d: FloatArray
    d2: FloatArray


def _masked_rows(scaled: FloatArray, c: _ColumnStats, rows: IntArray, min_periods: int) -> FloatArray:
    """Rho of the gapped columns `rows` against every column, over the rows where both have a return.

    `scaled` holds those rows of the unit-norm product, which already is the co-moment over the common
    rows up to scale (missing returns are 0). Every other pairwise sum is the column's own sum minus its
    sum over the other column's missing rows: two masked products with the gap indicator.
    """
    k, n = rows.size, c.n.size
    # [k, j]: sums of column j over the rows where k is missing -> count, sum, sum of squares of j on
    # the rows common to k and j.
    over_k_gaps = _t_product(c.missing[:, rows], c.stacked)
    n_kj = c.n - over_k_gaps[:, :n]
    s_j = c.total - over_k_gaps[:, n : 2 * n]
    ss_j = c.sum_sq - over_k_gaps[:, 2 * n :]
    # Sums of k over the rows common to k and j differ from k's own only where j has gaps: only the
    # columns of `partial` need a correction.
    over_j_gaps = _t_product(c.missing[:, c.partial], np.concatenate([c.d[:, rows], c.d2[:, rows]], axis=1))
    s_k = np.repeat(c.total[rows, np.newaxis], n, axis=1)
    ss_k = np.repeat(c.sum_sq[rows, np.newaxis], n, axis=1)
    s_k[:, c.partial] -= over_j_gaps[:, :k].T
    ss_k[:, c.partial] -= over_j_gaps[:, k:].T
    # Raw co-moment over the common rows, recovered from the scaled product.
    cov = scaled * c.root_ss[rows, np.newaxis]
    cov *= c.root_ss
    ok = n_kj >= min_periods
    inv_n = np.reciprocal(np.maximum(n_kj, 1.0, out=n_kj), out=n_kj)
    tmp = np.multiply(s_k, s_j)
    cov -= np.multiply(tmp, inv_n, out=tmp)
    ss_k -= np.multiply(np.multiply(s_k, s_k, out=tmp), inv_n, out=tmp)
    ss_j -= np.multiply(np.multiply(s_j, s_j, out=tmp), inv_n, out=tmp)
    ok &= ss_k > _MIN_SUM_SQ
    ok &= ss_j > _MIN_SUM_SQ
    with np.errstate(invalid="ignore"):  # negative rounding noise under sqrt is masked by `ok`
        denom = np.sqrt(np.multiply(ss_k, ss_j, out=ss_k), out=ss_k)
    out = np.full(cov.shape, np.nan)
    np.divide(cov, denom, out=out, where=ok)
    return out


def _block_rows(a: FloatArray, b: FloatArray) -> int:
    """Rows of ``a.T`` per BLAS call so that one call stays under `_BLAS_CHUNK` multiply-adds."""
    return max(8, _BLAS_CHUNK // max(1, int(a.shape[0]) * int(b.shape[1])))


def _t_product(a: FloatArray, b: FloatArray) -> FloatArray:
    """``a.T @ b``, issued in row blocks (see `_BLAS_CHUNK`)."""
    out = np.empty((a.shape[1], b.shape[1]))
    step = _block_rows(a, b)
    for start in range(0, a.shape[1], step):
        np.matmul(a[:, start : start + step].T, b, out=out[start : start + step])
    return out


def _gram(z: FloatArray, out: FloatArray) -> None:
    """``out = z.T @ z``, exactly symmetric: each row block is computed right of the diagonal, mirrored."""
    n = z.shape[1]
    step = _block_rows(z, z)
    for start in range(0, n, step):
        stop = min(n, start + step)
        np.matmul(z[:, start:stop].T, z[:, start:], out=out[start:stop, start:])
        out[start:, start:stop] = out[start:stop, start:].T


def _labels(rho: FloatArray, name_rank: IntArray, params: ClusterParams) -> IntArray:
    """Cluster label per column of `rho` (arbitrary ints: only the partition matters).

    `name_rank` is each column's position in alphabetical symbol order (linkage only: components ignore it).
    """
    n = rho.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.intp)
    if params.method == "components":
        # Seed 003's BFS over |rho| >= threshold links is exactly connected components of that graph.
        # NaN compares False: no link. Two boolean masks avoid a float temporary the size of rho.
        adjacent = rho >= params.threshold
        adjacent |= rho <= -params.threshold
        # CSR built straight from the row-major nonzeros (one pass over the links; float64 data, which
        # csgraph would otherwise convert to): about twice as fast as csr_matrix(dense).
        flat = np.flatnonzero(adjacent)
        rows, indices = np.divmod(flat, n)
        indptr = np.searchsorted(rows, np.arange(n + 1))
        graph = csr_matrix((np.ones(flat.size), indices, indptr), shape=(n, n))
        # rho is exactly symmetric (`_correlation` mirrors it), so is the link graph: its strong components
        # are its components, and csgraph finds them without building the transpose the undirected mode needs.
        _, labels = connected_components(graph, directed=True, connection="strong")
        return np.asarray(labels, dtype=np.intp)
    # Linkage: only symbols with a valid rho to some other symbol take part; the others stay singletons.
    labels = np.arange(n, dtype=np.intp)
    eligible = np.flatnonzero(np.count_nonzero(np.isfinite(rho), axis=1) > 1)  # the diagonal counts once
    if eligible.size < 2:
        return labels
    # Feed linkage in alphabetical order: its tie-breaking depends on input order, the ids must not.
    eligible = eligible[np.argsort(name_rank[eligible])]
    in_order = eligible.size == n and bool(np.all(eligible == np.arange(n)))
    condensed = squareform(rho if in_order else rho[np.ix_(eligible, eligible)], checks=False)
    # Distance 1 - |rho|; a pair without a valid rho counts as uncorrelated (distance 1, never a link).
    np.abs(condensed, out=condensed)
    np.nan_to_num(condensed, copy=False, nan=0.0)
    np.subtract(1.0, condensed, out=condensed)
    tree = linkage(condensed, method=params.method)
    flat = np.asarray(fcluster(tree, t=1.0 - params.threshold, criterion="distance"), dtype=np.intp)
    labels[eligible] = n + flat  # offset keeps them apart from the singleton labels
    return labels


def _enc(value: float) -> float | None:
    return None if math.isnan(value) else value


def _dec(value: object) -> float:
    return math.nan if value is None else _float(value)


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an int, got {value!r}")
    return value


def _opt_int(value: object) -> int | None:
    return None if value is None else _int(value)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _list(value: object) -> Sequence[object]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    return value


__all__ = ["ClusterMap", "ClusterParams", "ClusterState"]
