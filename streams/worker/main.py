"""The app for Faust's own CLI, configured from the environment (SPEC §1).

    RISKGUARD_CONFIG=deploy/profiles/demo.yaml faust -A streams.worker.main worker -l info
    faust -A streams.worker.main agents        # the market agent, the sequencer, the level chain
    faust -A streams.worker.main tables        # level-market, level-account, level-symbol, level-portfolio

`riskguard worker` does the same and also creates the topics first (Faust creates missing ones at
start too, but a group assigned before they exist leaves them idle until its next metadata refresh:
start `riskguard worker` once on a new deployment, or create the topics beforehand).
"""

from __future__ import annotations

import os

from schemas.config import load_config
from streams.worker.app import build_app
from streams.worker.settings import WorkerSettings

_config = load_config(os.environ.get("RISKGUARD_CONFIG"))
app = build_app(_config, WorkerSettings.from_config(_config))
