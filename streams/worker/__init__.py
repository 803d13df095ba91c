"""The Faust shell of the guard: settings, sequencer, market agent, level chain, batching, commit, web.

`streams.worker.main` is the module for Faust's own CLI (`faust -A streams.worker.main worker`).
"""

from streams.worker.app import build_app
from streams.worker.settings import WorkerSettings, control_key

__all__ = ["WorkerSettings", "build_app", "control_key"]
