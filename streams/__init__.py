"""riskguard runtime: the deterministic core (`streams.core`) and its shells (CLI, tapes, agents)."""

import os

# Small matrix products (500 x 30) slow down 10-100x when OpenBLAS spreads them over threads on a
# busy 2-core box; the cluster math is fastest single-threaded. Users may still override it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
