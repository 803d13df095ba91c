"""How the worker connects, batches and stores state: one frozen object, from the config and the environment.

The config file's `kafka:` block gives the deployment's broker, app id and partition count; every
field can be overridden from the environment (deploy files set these), and the CLI's flags win over
both. Defaults live once, on the dataclass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from schemas.config import Config
from streams.security import control_key
from streams.topology import partition_for

__all__ = ["ENV", "WorkerSettings", "control_key", "partition_for"]

ENV = {
    "bootstrap": "KAFKA_BOOTSTRAP_SERVERS",
    "app_id": "RISKGUARD_APP_ID",
    "partitions": "RISKGUARD_PARTITIONS",
    "store": "RISKGUARD_STORE",
    "processing_guarantee": "RISKGUARD_PROCESSING_GUARANTEE",
    "web_port": "RISKGUARD_WEB_PORT",
    "web_host": "RISKGUARD_WEB_HOST",
    "web_bind": "RISKGUARD_WEB_BIND",
    "datadir": "RISKGUARD_DATADIR",
    "batch_max": "RISKGUARD_BATCH_MAX",
    "batch_window_ms": "RISKGUARD_BATCH_WINDOW_MS",
    "fetch_max_wait_ms": "RISKGUARD_FETCH_MAX_WAIT_MS",
    "instance_id": "RISKGUARD_INSTANCE_ID",
    "session_timeout_s": "RISKGUARD_SESSION_TIMEOUT_S",
    "standby_replicas": "RISKGUARD_STANDBY_REPLICAS",
}
GUARANTEES = ("at_least_once", "exactly_once")


@dataclass(frozen=True)
class WorkerSettings:
    """The worker's runtime settings; every field has an environment override (`ENV`)."""

    bootstrap: str = "127.0.0.1:9092"
    app_id: str = "riskguard"
    partitions: int = 4
    store: str = "rocksdb://"
    processing_guarantee: str = "at_least_once"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    web_bind: str = "127.0.0.1"
    datadir: str = ".cache/worker"
    batch_max: int = 2000
    batch_window_ms: float = 20.0  # the sequencer's second fetch after a crowd (docs/performance.md, session 11)
    fetch_max_wait_ms: int = 50
    """How long the broker may hold a fetch of the worker's consumers for data (aiokafka's 500 ms, Faust's
    1,500 ms). A fetch names only the partitions whose last records were taken; while it waits, no other
    fetch goes to the broker, so a long wait on idle partitions held back busy ones (docs/performance.md,
    session 12). Bounds how long such a stall can last; an idle worker polls this often."""
    instance_id: str = ""
    """Static group membership (KIP-345): a stable id per worker, e.g. `w1`; empty = dynamic membership."""
    session_timeout_s: float = 10.0
    """How long the group waits for a silent member before its partitions move (6 s is the broker minimum)."""
    standby_replicas: int = 0
    """Workers that keep a warm copy of each table partition (Faust `table_standby_replicas`)."""

    def __post_init__(self) -> None:
        if self.processing_guarantee not in GUARANTEES:
            raise ValueError(f"processing_guarantee must be one of {', '.join(GUARANTEES)}")
        if not self.store.startswith(("rocksdb://", "memory://")):
            raise ValueError("store must be rocksdb:// or memory://")
        if self.partitions < 1 or self.batch_max < 1 or self.standby_replicas < 0:
            raise ValueError("partitions and batch_max must be >= 1, standby_replicas >= 0")
        if not 1 <= self.fetch_max_wait_ms <= 1500:
            raise ValueError("fetch_max_wait_ms must lie in [1, 1500]")
        if not 6.0 <= self.session_timeout_s <= 300.0:
            raise ValueError("session_timeout_s must lie in [6, 300] (the broker's group session bounds)")

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> WorkerSettings:
        """The config's `kafka:` block, then the environment, then the given (non-None) overrides."""
        values: dict[str, Any] = {
            "bootstrap": config.kafka.bootstrap_servers,
            "app_id": config.kafka.app_id,
            "partitions": config.kafka.partitions,
        }
        kinds = {f.name: f.type for f in fields(cls)}
        for name, var in ENV.items():
            raw = os.environ.get(var)
            if raw is not None:
                kind = kinds[name]
                values[name] = int(raw) if kind == "int" else float(raw) if kind == "float" else raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def group_instance_id(self) -> str | None:
        """The consumer's static member id: app id, this worker's instance id and web port (None: not set).

        The web port is part of it because Faust's assignor keeps each member's URL with its assignment and
        refuses a static member that comes back at another URL: a worker restarted on another port must
        join as a new member, not crash its consumer.
        """
        return f"{self.app_id}-{self.instance_id}-{self.web_port}" if self.instance_id else None
