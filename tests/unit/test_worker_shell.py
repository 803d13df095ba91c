"""The worker shell without a broker: Faust's own CLI on the app, the fenced Faust internals, the settings."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from schemas.config import load_config
from streams.worker import faust_compat
from streams.worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]


def _faust(command: str, tmp_path: Path) -> str:
    env = {"PATH": "/usr/bin:/bin", "RISKGUARD_DATADIR": str(tmp_path), "RISKGUARD_STORE": "memory://"}
    done = subprocess.run(
        [sys.executable, "-m", "faust", "-A", "streams.worker.main", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_faust_agents_when_run_on_the_worker_module_then_market_and_chain_listed(tmp_path: Path) -> None:
    out = _faust("agents", tmp_path)
    assert "@level-market" in out and "@level-chain" in out
    assert "@sequencer" not in out  # the sequencer reads its inputs with a consumer of its own
    assert "risk.sequenced" in out and "market.bars" in out
    assert "level1" not in out and "level2" not in out and "level3" not in out  # no internal level topics


def test_faust_tables_when_run_on_the_worker_module_then_one_table_per_level(tmp_path: Path) -> None:
    out = _faust("tables", tmp_path)
    for table in ("level-market", "level-account", "level-symbol", "level-portfolio"):
        assert table in out


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_built_app_when_any_guarantee_then_its_producer_is_idempotent_with_acks_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, guarantee: str
) -> None:
    from streams.worker.app import build_app

    monkeypatch.setenv("RISKGUARD_DATADIR", str(tmp_path))
    monkeypatch.setenv("RISKGUARD_STORE", "memory://")
    monkeypatch.setenv("RISKGUARD_PROCESSING_GUARANTEE", guarantee)
    config = load_config(None)
    settings = WorkerSettings.from_config(config)
    assert settings.processing_guarantee == guarantee
    extra = build_app(config, settings).producer._settings_extra()
    assert extra["enable_idempotence"] is True and extra["acks"] == "all"


def test_built_app_when_fetch_wait_set_then_fausts_consumer_asks_the_broker_to_hold_fetches_no_longer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.worker.app import build_app

    monkeypatch.setenv("RISKGUARD_DATADIR", str(tmp_path))
    monkeypatch.setenv("RISKGUARD_STORE", "memory://")
    monkeypatch.setenv("RISKGUARD_FETCH_MAX_WAIT_MS", "35")
    config = load_config(None)
    app = build_app(config, WorkerSettings.from_config(config))

    async def built() -> int:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # what Faust starts in its thread
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    assert asyncio.run(built()) == 35  # Faust alone asks for 1,500 ms


def test_settings_when_fetch_wait_outside_its_bounds_then_refused() -> None:
    with pytest.raises(ValueError, match="fetch_max_wait_ms"):
        WorkerSettings(fetch_max_wait_ms=0)
    with pytest.raises(ValueError, match="fetch_max_wait_ms"):
        WorkerSettings(fetch_max_wait_ms=5000)


@pytest.mark.parametrize(("agent", "window_s"), [("market", 0.02), ("chain", 0.0)])
def test_agent_when_run_then_only_the_market_agent_waits_the_batch_window_for_a_burst(
    monkeypatch: pytest.MonkeyPatch, agent: str, window_s: float
) -> None:
    from streams.worker import partitioned
    from streams.worker.chain import LevelChain
    from streams.worker.market import MarketAgent

    asked: list[float] = []

    async def no_batches(stream: Any, limit: int, window: float = 0.0) -> Any:
        asked.append(window)
        return
        yield

    monkeypatch.setattr(partitioned, "batches", no_batches)
    cls = MarketAgent if agent == "market" else LevelChain
    shell = object.__new__(cls)  # only `run` is exercised: the shell's state is not needed
    shell.streams = []
    shell.rt = type("Rt", (), {"settings": WorkerSettings(batch_window_ms=20.0), "gate": None})()
    asyncio.run(shell.run(object()))
    assert asked == [window_s]


def test_idempotent_producer_when_faust_producer_lacks_the_hook_then_clear_error() -> None:
    class App:
        producer = object()

    with pytest.raises(faust_compat.IncompatibleFaust, match="_settings_extra"):
        faust_compat.idempotent_producer(App())


def test_check_when_installed_faust_differs_from_the_pin_then_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_compat.metadata, "version", lambda package: "9.9.9")
    with pytest.raises(faust_compat.IncompatibleFaust, match=r"faust-streaming 9\.9\.9 is installed.*0\.15\.3"):
        faust_compat.check()


def test_check_when_pinned_versions_installed_then_passes() -> None:
    faust_compat.check()


def test_commit_gate_when_consumer_lacks_a_patched_attribute_then_clear_error() -> None:
    class Consumer:
        _new_offset = _acked = _acked_index = _gap = None

        async def seek_to_committed(self) -> Any:
            return {}

    with pytest.raises(faust_compat.IncompatibleFaust, match="_read_offset"):
        faust_compat.check_consumer(Consumer())


def test_settings_when_session_timeout_below_the_broker_floor_then_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKGUARD_SESSION_TIMEOUT_S", "3")
    with pytest.raises(ValueError, match="session_timeout_s"):
        WorkerSettings.from_config(load_config(None))


def test_settings_when_instance_id_set_then_static_member_id_names_app_and_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RISKGUARD_APP_ID", "desk")
    monkeypatch.setenv("RISKGUARD_INSTANCE_ID", "w2")
    settings = WorkerSettings.from_config(load_config(None))
    assert settings.group_instance_id == "desk-w2-6066"  # the web port too: Faust checks a member's URL
    assert (settings.session_timeout_s, settings.standby_replicas) == (10.0, 0)


def test_watchdog_when_a_read_fails_with_the_broker_away_then_the_others_run_and_nothing_escapes() -> None:
    import asyncio

    from aiokafka.errors import KafkaConnectionError

    from streams.worker.app import watch_all

    ran: list[str] = []

    async def broker_away() -> None:
        ran.append("market")
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 34801)]")

    async def fine() -> None:
        ran.append("chain")

    async def cancelled() -> None:
        raise asyncio.CancelledError

    asyncio.run(watch_all((broker_away, fine)))  # before the fix this raised, and Faust's timer crashed the app
    assert ran == ["market", "chain"]
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(watch_all((cancelled, fine)))


def test_merge_fetches_when_a_partition_comes_in_both_then_its_records_stay_in_offset_order() -> None:
    from streams.worker.sequencer import merge_fetches

    first = {"tp0": [1, 2], "tp1": [10]}
    more = {"tp1": [11, 12], "tp2": [20]}

    merged = merge_fetches(first, more)

    assert merged == {"tp0": [1, 2], "tp1": [10, 11, 12], "tp2": [20]}
    assert first == {"tp0": [1, 2], "tp1": [10]}  # the fetch itself is left as it was
