"""The Faust shell of the guard: settings, sequencer, market agent, level chain, batching, commit, web.

`streams.worker.main` is the module for Faust's own CLI (`faust -A streams.worker.main worker`).

`build_app` is imported on first use, not with the package: `streams.worker.settings` (the partition
rule the client shares with the sequencer) must not pull Faust into an execution service.
"""

from typing import Any

from streams.worker.settings import WorkerSettings, control_key

__all__ = ["WorkerSettings", "build_app", "control_key"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from streams.worker.app import build_app

        return build_app
    raise AttributeError(f"module 'streams.worker' has no attribute {name!r}")
