"""Shared fixtures: the seed 001 YAML exactly as the seed writes it, and the real data path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SEED001_YAML = """\
risk:
  per_trade:
    max_notional: 1500          # hard ceiling per single order
    lot_size: 5                 # shares rounded to nearest lot
    min_order_notional: 200     # skip dust orders

  per_symbol:
    default_cap: 15000          # fallback cap if symbol not specified
    overrides:
      NVDA: 20000
      TSLA: 25000
    band_pct: 0.05              # ±5% drift band before resize
    rebalance_cadence: "30m"    # only check/act every 30m

  groups:
    type: "sector"              # or "factor"
    cap_by_group:
      Technology: 60000
      Financial: 50000
      Default: 40000

  portfolio:
    gross_cap: 100000           # max gross exposure
    net_cap: 20000              # |long-short| <= 20k
    vol_target:
      enabled: true
      target_daily_vol: 0.01    # ~1% of capital

policy:
  rebalance_triggers:
    on_signal_change: true      # act when target changes materially
    on_cadence_tick: true       # evaluate every 30m
    on_threshold_breach: true   # act when outside bands
    signal_change_threshold: 0.05  # 5% material change threshold
"""

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def seed001_path(tmp_path: Path) -> Path:
    path = tmp_path / "seed001.yaml"
    path.write_text(SEED001_YAML, encoding="utf-8")
    return path


@pytest.fixture
def data_dir() -> Path:
    assert DATA_DIR.is_dir(), f"../shared/data is expected beside the project at {DATA_DIR}"
    return DATA_DIR


def pytest_report_header() -> str:
    """Which Kafka broker the integration tests will use, and why (tests/integration/brokers.py)."""
    from tests.integration.brokers import choose

    return f"kafka broker for the integration tests: {choose(os.environ.get('KAFKA_BOOTSTRAP_SERVERS')).reason}"
