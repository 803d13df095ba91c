"""The worker's web server: the operator page, /health, /metrics, the views and the signed POST /rebalance (SPEC §9)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from importlib import resources
from typing import Any

import faust
import structlog

from schemas.config import Config
from streams.metrics import Metrics
from streams.worker.outputs import RecentOutputs
from streams.worker.settings import control_key, partition_for

log = structlog.get_logger("riskguard.worker")


def register_web(
    app: faust.App,
    config: Config,
    levels_of: Callable[[int], dict[str, Any]],
    sequencer_stats: Counter[str],
    metrics: Metrics,
    control_topic: faust.TopicT,
    partitions: int,
    sequenced: str,
    recent: RecentOutputs,
) -> None:
    """/health, /metrics, the state and budget views of SPEC §9 and the signed POST /rebalance/{id}, and the
    operator page at `/` (a static file polling `/accounts`, `/accounts/{id}/overview` and `/accounts/{id}/recent`).

    A worker answers for the accounts on the partitions it holds; for another partition it says which
    (404), so a router or the operator can ask the worker that holds it.
    """
    from faust.web import View

    from streams import views

    page = resources.files("streams.worker").joinpath("operator.html").read_text(encoding="utf-8")

    def mine() -> list[int]:
        return sorted({tp.partition for tp in app.consumer.assignment() if tp.topic == sequenced})

    def held(account: str) -> tuple[int, bool]:
        partition = partition_for(account, partitions)
        return partition, partition in mine()

    def answer(web: Any, name: str, account: str) -> Any:
        partition, mine = held(account)
        if not mine:
            return web.json({"error": "partition not held by this worker", "partition": partition}, status=404)
        levels = levels_of(partition)
        data = views.VIEWS[name](levels, account)
        if data is None:
            return web.json({"error": f"unknown account {account!r}", "partition": partition}, status=404)
        return web.json(data)

    @app.page("/")
    async def operator_page(web: Any, request: Any) -> Any:
        return web.html(page)

    @app.page("/accounts")
    async def accounts(web: Any, request: Any) -> Any:
        held_now = mine()
        listed = views.held_accounts({p: levels_of(p) for p in held_now})
        return web.json({"app": app.conf.id, "partitions": held_now, "of": partitions, "accounts": listed})

    @app.page("/accounts/{account}/overview")
    async def overview(web: Any, request: Any, account: str) -> Any:
        return answer(web, "overview", account)

    @app.page("/accounts/{account}/recent")
    async def recent_outputs(web: Any, request: Any, account: str) -> Any:
        partition, held_here = held(account)
        if not held_here:
            return web.json({"error": "partition not held by this worker", "partition": partition}, status=404)
        return web.json({"account": account, "partition": partition, **recent.of(account)})

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "app": app.conf.id})

    @app.page("/accounts/{account}/state")
    async def account_state(web: Any, request: Any, account: str) -> Any:
        return answer(web, "state", account)

    @app.page("/budget/{account}")
    async def budget(web: Any, request: Any, account: str) -> Any:
        return answer(web, "budget", account)

    @app.page("/budget/{account}/utilization")
    async def utilization(web: Any, request: Any, account: str) -> Any:
        return answer(web, "utilization", account)

    @app.page("/budget/{account}/recommendations")
    async def recommendations(web: Any, request: Any, account: str) -> Any:
        return answer(web, "recommendations", account)

    @app.page("/rebalance/{account}")
    class Rebalance(View):
        async def post(self, request: Any, account: str) -> Any:
            body = await request.read()
            verdict = views.rebalance_request(body, account, control_key(), required=config.control.require_signature)
            if isinstance(verdict, str):
                status = 403 if verdict.startswith("security") else 400
                log.warning("rebalance_request_refused", account=account, status=status, error=verdict)
                return self.json({"error": verdict}, status=status)
            await control_topic.send(key=account.encode(), value=body, force=True)
            return self.json({"accepted": True, "account": account, "nonce": verdict.nonce}, status=202)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        body, content_type = metrics.render()
        lines = ["# TYPE riskguard_sequencer_messages_total counter"]
        for name, value in sorted(sequencer_stats.items()):
            lines.append(f'riskguard_sequencer_messages_total{{name="{name}"}} {value}')
        text = body + ("\n".join(lines) + "\n").encode()
        return web.bytes(text, headers={"Content-Type": content_type})
