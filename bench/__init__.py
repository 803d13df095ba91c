"""Benchmarks of docs/performance.md; `python -m bench.run` (make bench) runs them all."""
