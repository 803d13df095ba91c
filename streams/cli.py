"""The `riskguard` command line (typer): replay, verify, gen, schema."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any, Literal

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from schemas.config import Config, ConfigError, load_config
from schemas.outputs import Decision, Halt, RiskEvent
from schemas.timefmt import format_ts
from streams.core.engine import Output

app = typer.Typer(
    name="riskguard",
    help="Hierarchical trading-risk guard: replay tapes, verify decisions, generate data.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML configuration file.")]


def _config(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        err.print(f"[bold red]configuration error[/]\n{exc}")
        raise typer.Exit(2) from None


@contextlib.contextmanager
def _open_in(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = Path(path).open("rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        err.print(f"[bold red]cannot read {path}[/]: {exc.strerror}")
        raise typer.Exit(2) from None
    with handle:
        yield handle


@contextlib.contextmanager
def _open_out(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as handle:
        yield handle


def _show_progress(path: str) -> bool:
    return path != "-" and err.is_terminal


_COLOURS = {"ALLOW": "green", "CLIP": "yellow", "DENY": "red", "NOOP": "dim"}


def _printer(console: Console) -> Callable[[Output], None]:
    """A live, one-line-per-message view of decisions, halts and warnings."""

    def show(output: Output) -> None:
        value = output.value
        if isinstance(value, Decision) and value.action.value != "NOOP":
            colour = _COLOURS[value.action.value]
            side = value.side.value if value.side else "-"
            console.print(
                f"{format_ts(value.ts)[:19]} [{colour}]{value.action.value:<5}[/] {value.account:<6} "
                f"{side:<4} {value.qty:>8g} {value.symbol:<6} @ {value.price:<9.2f} "
                f"[cyan]{value.layer.value}[/]/{value.reason} ({value.origin.value})",
                soft_wrap=True,
            )
        elif isinstance(value, Halt):
            console.print(
                f"{format_ts(value.ts)[:19]} [bold magenta]HALT[/]  {value.account:<6} "
                f"{value.previous_state.value} -> [bold]{value.state.value}[/] ({value.reason}; "
                f"equity {value.facts.equity:,.0f}, drawdown {value.facts.intraday_drawdown_pct:.2%})",
                soft_wrap=True,
            )
        elif isinstance(value, RiskEvent) and value.kind != "cluster_map":
            console.print(
                f"{format_ts(value.ts)[:19]} [blue]EVENT[/] {value.account or '*'} {value.kind} {value.details}",
                soft_wrap=True,
            )

    return show


@app.command()
def replay(
    tape: Annotated[str, typer.Argument(help="Input tape (JSON Lines), or - for stdin.")],
    config: ConfigOpt = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Output tape, or - for stdout.")] = "-",
    show: Annotated[bool, typer.Option("--show", help="Print decisions and halts as they happen.")] = False,
) -> None:
    """Run a tape through the in-process guard engine; write every output message."""
    from streams.audit.core import AuditInputError, is_log_recording, peek, replay_log
    from streams.core.engine import Engine
    from streams.security import control_key
    from streams.tape import replay as run

    cfg = _config(config)
    engine = Engine(cfg, control_key=control_key())
    with _open_in(tape) as source, _open_out(out) as sink:
        first, lines = peek(source)
        if first is not None and is_log_recording(first):  # `riskguard record --topics sequenced`
            try:
                records = replay_log(cfg, lines, sink)
            except AuditInputError as exc:
                err.print(f"[bold red]cannot replay this recording of the sequenced log[/]: {exc}")
                raise typer.Exit(2) from None
            err.print(f"replayed {records} records of the sequenced log, each partition on its own")
            return
        if _show_progress(tape):
            total = Path(tape).stat().st_size
            with Progress(
                TextColumn("replay"), BarColumn(), TransferSpeedColumn(), TimeRemainingColumn(), console=err
            ) as progress:
                task = progress.add_task("replay", total=total)

                def advancing() -> Iterator[bytes]:
                    for line in lines:
                        progress.advance(task, len(line))
                        yield line

                count = run(engine, advancing(), sink, on_output=_printer(progress.console) if show else None)
        else:
            count = run(engine, lines, sink, on_output=_printer(err) if show else None)
    stats = dict(sorted(engine.stats.items()))
    err.print(f"replayed {count} lines: " + ", ".join(f"{k}={v}" for k, v in stats.items()), soft_wrap=True)


@app.command()
def verify(
    inputs: Annotated[
        Path,
        typer.Argument(help="The input tape that was replayed or published, or a recording of the sequenced log."),
    ],
    outputs: Annotated[Path, typer.Argument(help="The output tape (replay output or a recording).")],
    config: ConfigOpt = None,
) -> None:
    """Exit 0 when every recorded decision and halt re-derives from the inputs and from its facts."""
    from streams.audit.core import AuditInputError
    from streams.verify import verify as run

    cfg = _config(config)
    with _open_in(str(inputs)) as source, _open_in(str(outputs)) as recorded:
        from streams.security import control_key

        try:
            report = run(cfg, source, recorded, control_key=control_key())
        except AuditInputError as exc:
            err.print(f"[bold red]cannot verify against this recording of the sequenced log[/]: {exc}")
            raise typer.Exit(2) from None
    counts = ", ".join(f"{n} {topic}" for topic, n in report.checked.items())
    if report.ok:
        err.print(f"[green]verified[/]: {counts}; {report.from_facts} decisions re-derived from their facts")
        return
    err.print(f"[bold red]verification failed[/]: {counts}; {len(report.problems)} problem(s)")
    for problem in report.problems:
        err.print(f"  - {problem}", soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def state(
    tape: Annotated[str, typer.Argument(help="Input tape (JSON Lines), or - for stdin.")],
    account: Annotated[str, typer.Option("--account", "-a", help="The account to show.")],
    config: ConfigOpt = None,
    view: Annotated[
        str, typer.Option("--view", help="state | budget | utilization | recommendations | overview (the web views).")
    ] = "state",
) -> None:
    """Replay a tape and print one account's view as JSON: the replay counterpart of the web views."""
    import io

    from streams.core.engine import Engine
    from streams.security import control_key
    from streams.tape import replay as run
    from streams.views import VIEWS

    if view not in VIEWS:
        err.print(f"[bold red]unknown view {view!r}[/]: one of {', '.join(VIEWS)}")
        raise typer.Exit(2)
    cfg = _config(config)
    engine = Engine(cfg, control_key=control_key())
    with _open_in(tape) as source:
        run(engine, source, io.BytesIO())
    answer = VIEWS[view](engine, account)
    if answer is None:
        err.print(f"[bold red]unknown account {account!r}[/]: the tape never mentions it")
        raise typer.Exit(1)
    sys.stdout.buffer.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.buffer.flush()


@app.command()
def gen(
    out: Annotated[str, typer.Option("--out", "-o", help="Output tape, or - for stdout.")] = "-",
    symbols: Annotated[int, typer.Option(min=1)] = 500,
    accounts: Annotated[int, typer.Option(min=1)] = 50,
    days: Annotated[int, typer.Option(min=1)] = 1,
    bar_seconds: Annotated[int, typer.Option(min=1)] = 60,
    seed: int = 7,
    config: ConfigOpt = None,
) -> None:
    """Write a seeded synthetic tape: sector factor model, fills following decisions, marked equity."""
    from streams.gen import GenParams, write_tape

    cfg = _config(config)
    params = GenParams(symbols=symbols, accounts=accounts, days=days, bar_seconds=bar_seconds, seed=seed)
    with _open_out(out) as sink:
        if err.is_terminal and out != "-":
            with Progress(TextColumn("gen"), BarColumn(), TimeRemainingColumn(), console=err) as progress:
                total = days * params.session_minutes * 60 // bar_seconds
                task = progress.add_task("gen", total=total)
                count = write_tape(params, sink, cfg, progress=lambda n: progress.update(task, completed=n))
        else:
            count = write_tape(params, sink, cfg)
    err.print(f"wrote {count} lines")


@app.command()
def report(
    tape: Annotated[Path, typer.Argument(help="An output tape (replay output or a recording).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML report to write.")] = Path("report.html"),
    png_dir: Annotated[Path | None, typer.Option(help="Also write the charts as PNG files here.")] = None,
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
) -> None:
    """Render an HTML (and PNG) report of a replay: equity, drawdown, halts, decisions, clusters."""
    from streams.report import render_report

    if err.is_terminal:
        with Progress(TextColumn("report"), BarColumn(), TimeRemainingColumn(), console=err) as progress:
            task = progress.add_task("report", total=tape.stat().st_size)
            summary = render_report(tape, out, png_dir, title, progress=lambda n: progress.update(task, completed=n))
    else:
        summary = render_report(tape, out, png_dir, title)
    err.print(
        f"wrote {out}: {summary.decisions} decisions ({summary.allow} ALLOW, {summary.clip} CLIP, "
        f"{summary.deny} DENY), {summary.halts} state changes, {summary.dead_letters} dead letters",
        soft_wrap=True,
    )


@app.command()
def schema(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the JSON Schema files.")] = Path("schema"),
) -> None:
    """Export the JSON Schemas of every input, output and the configuration."""
    from schemas.config import Config as ConfigModel
    from schemas.inputs import INPUT_MODELS
    from schemas.outputs import OUTPUT_MODELS

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for topic, model in {**INPUT_MODELS, **OUTPUT_MODELS}.items():
        mode: Literal["validation", "serialization"] = "validation" if topic in INPUT_MODELS else "serialization"
        path = out / f"{topic}.{model.__name__}.schema.json"
        path.write_bytes(orjson.dumps(model.model_json_schema(mode=mode), option=orjson.OPT_INDENT_2))
        written.append(path.name)
    from streams.asyncapi import write_asyncapi

    write_asyncapi(out)
    written += ["asyncapi.yaml", "asyncapi.json"]
    cfg_path = out / "config.schema.json"
    cfg_path.write_bytes(orjson.dumps(ConfigModel.model_json_schema(), option=orjson.OPT_INDENT_2))
    written.append(cfg_path.name)
    err.print(f"wrote {len(written)} schemas to {out}: {', '.join(written)}")


@app.command()
def worker(
    config: ConfigOpt = None,
    store: Annotated[str | None, typer.Option(help="Table store: rocksdb:// (default) or memory://.")] = None,
    web_port: Annotated[int | None, typer.Option(help="Port of the worker's web server.")] = None,
    guarantee: Annotated[str | None, typer.Option(help="at_least_once (default) or exactly_once.")] = None,
    datadir: Annotated[str | None, typer.Option(help="Where RocksDB tables live.")] = None,
) -> None:
    """Run the Faust worker: the market agent (Level 2), the sequencer and the level chain (Levels 1, 3, 4)."""
    import os

    import faust

    from streams.logs import configure_logging
    from streams.worker import WorkerSettings, build_app

    configure_logging(os.environ.get("RISKGUARD_LOG_LEVEL", "INFO"))
    cfg = _config(config)
    settings = WorkerSettings.from_config(
        cfg, store=store, web_port=web_port, processing_guarantee=guarantee, datadir=datadir
    )
    import asyncio

    from streams.kafka_io import ensure_topics
    from streams.topology import Topics

    asyncio.run(ensure_topics(Topics.from_settings(cfg.kafka), settings.bootstrap, settings.partitions))
    faust_app = build_app(cfg, settings)
    err.print(f"worker {settings.app_id} on {settings.bootstrap}, store {settings.store}, web :{settings.web_port}")
    faust.Worker(
        faust_app, loglevel="warning", quiet=True, override_logging=False, redirect_stdouts=False
    ).execute_from_commandline()


def _bootstrap(cfg: Config) -> str:
    import os

    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", cfg.kafka.bootstrap_servers)


@app.command()
def publish(
    tape: Annotated[str, typer.Argument(help="Input tape (JSON Lines), or - for stdin.")],
    config: ConfigOpt = None,
    ordered: Annotated[bool, typer.Option(help="Wait for the sequencer at every change of topic.")] = False,
    rate: Annotated[float | None, typer.Option(help="Messages per second (default: as fast as possible).")] = None,
    timeout: Annotated[
        float, typer.Option(help="With --ordered: seconds to wait for the sequencer at each change of topic.")
    ] = 120.0,
) -> None:
    """Produce a tape to the input topics."""
    import asyncio

    from streams.kafka_io import publish as run
    from streams.topology import Topics

    cfg = _config(config)
    with _open_in(tape) as source:
        counts = asyncio.run(
            run(source, Topics.from_settings(cfg.kafka), _bootstrap(cfg), ordered=ordered, rate=rate, timeout=timeout)
        )
    err.print("published " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))


@app.command()
def record(
    config: ConfigOpt = None,
    topics: Annotated[str, typer.Option(help="Logical topics, comma-separated.")] = "decisions,halts",
    out: Annotated[str, typer.Option("--out", "-o", help="Output tape, or - for stdout.")] = "-",
    idle: Annotated[float, typer.Option(help="Stop after this many seconds without a new message.")] = 5.0,
    drained: Annotated[
        str | None, typer.Option(help="First wait until this app id's consumer group has caught up.")
    ] = None,
) -> None:
    """Consume topics from the beginning (read_committed) and write them as a tape."""
    import asyncio

    from streams.kafka_io import record as run
    from streams.kafka_io import wait_drained
    from streams.topology import Topics

    cfg = _config(config)
    if drained and not asyncio.run(wait_drained(Topics.from_settings(cfg.kafka), _bootstrap(cfg), drained)):
        err.print(f"[yellow]the pipeline of {drained} did not catch up within the time limit; recording anyway[/]")
    names = [t.strip() for t in topics.split(",") if t.strip()]
    with _open_out(out) as sink:
        counts = asyncio.run(run(Topics.from_settings(cfg.kafka), _bootstrap(cfg), names, sink, idle=idle))
    err.print("recorded " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))


@app.command()
def audit(
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="Compare only decisions and halts of event time at or after this (ISO 8601 or epoch ms); "
            "the sequenced log is still re-derived from its start."
        ),
    ] = None,
    grace: Annotated[
        float | None,
        typer.Option(help="Seconds a re-derived output may wait for its published copy (default 10; --follow 30)."),
    ] = None,
    allow_duplicates: Annotated[
        bool, typer.Option(help="Report copies with the same content but do not fail on them.")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep auditing as records arrive (the audit consumer service).")
    ] = False,
    group: Annotated[str | None, typer.Option(help="--follow: consumer group (default: <app id>-audit).")] = None,
    metrics_port: Annotated[
        int, typer.Option(envvar="RISKGUARD_AUDIT_METRICS_PORT", help="--follow: port of its /metrics.")
    ] = 6067,
    remember: Annotated[
        int, typer.Option(min=0, help="--follow: settled ids kept to spot later copies (bounds memory).")
    ] = 100_000,
) -> None:
    """Re-derive every published decision and halt from the sequenced log of a running deployment."""
    import asyncio

    from streams.audit.core import AuditInputError
    from streams.audit.kafka import audit_once
    from streams.audit.kafka import follow as run_follow
    from streams.security import SecurityConfigError
    from streams.worker.settings import WorkerSettings

    cfg = _config(config)
    start: int | None = None
    if since is not None:
        from schemas.timefmt import parse_input_ts

        try:
            start = parse_input_ts(since)
        except ValueError as exc:
            err.print(f"[bold red]--since[/]: {exc}")
            raise typer.Exit(2) from None
        if follow:
            err.print("[bold red]--since[/] applies to a one-shot audit; --follow audits everything it reads")
            raise typer.Exit(2)
    try:
        if follow:
            settings = WorkerSettings.from_config(cfg)
            name = group or f"{settings.app_id}-audit"
            err.print(f"audit consumer {name} on {_bootstrap(cfg)}, /metrics on :{metrics_port}")
            bind = settings.web_bind  # RISKGUARD_WEB_BIND, as the worker's web server
            asyncio.run(
                _follow_until_signal(
                    run_follow, cfg, _bootstrap(cfg), name, grace=grace, remember=remember, port=metrics_port, bind=bind
                )
            )
            return
        report = asyncio.run(
            audit_once(
                cfg,
                _bootstrap(cfg),
                since=start,
                grace=10.0 if grace is None else grace,
                allow_duplicates=allow_duplicates,
            )
        )
    except (AuditInputError, SecurityConfigError) as exc:
        err.print(f"[bold red]cannot audit[/]: {exc}")
        raise typer.Exit(2) from None
    if json_out:
        sys.stdout.buffer.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.buffer.flush()
    counts = report.counts
    summary = (
        f"{counts['recorded']} published decisions and halts, {counts['derived']} re-derived from "
        f"{counts['log_records']} records of the sequenced log; {counts['verified']} verified"
    )
    if report.ok:
        err.print(f"[green]audit passed[/]: {summary}", soft_wrap=True)
        return
    err.print(f"[bold red]audit failed[/]: {summary}; {len(report.failures)} finding(s)", soft_wrap=True)
    for finding in report.findings[:50]:
        err.print(f"  - {finding.text()}", soft_wrap=True, highlight=False, markup=False)
    if len(report.findings) > 50:
        err.print(f"  ... and {len(report.findings) - 50} more (--json lists them all)")
    raise typer.Exit(1)


async def _follow_until_signal(
    run: Any, cfg: Config, bootstrap: str, group: str, grace: float | None, remember: int, port: int, bind: str
) -> None:
    """Run the audit consumer until SIGTERM or SIGINT."""
    import asyncio
    import signal

    from streams.logs import configure_logging

    configure_logging(os.environ.get("RISKGUARD_LOG_LEVEL", "INFO"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    counts = await run(
        cfg,
        bootstrap,
        group,
        grace=30.0 if grace is None else grace,
        remember=remember,
        metrics_port=port,
        metrics_bind=bind,
        stop=stop,
    )
    err.print("audit consumer stopped: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())), soft_wrap=True)


@app.command()
def demo(
    config: ConfigOpt = None,
    data: Annotated[
        Path | None, typer.Option(help="The S&P 500 CSV of ../shared/data instead of a generated session.")
    ] = None,
    symbols: Annotated[int, typer.Option(min=1)] = 24,
    accounts: Annotated[int, typer.Option(min=1)] = 5,
    days: Annotated[int, typer.Option(min=1)] = 3,
) -> None:
    """The main job on a local default: broker, worker, a session published in order, shown live."""
    from streams.demo import run_demo, sp500_tape
    from streams.gen import GenParams, generate

    cfg = _config(config)
    if data is not None:
        tape = list(sp500_tape(data))
    else:
        tape = [
            line.strip()
            for line in generate(GenParams(symbols=symbols, accounts=accounts, days=days, session_minutes=120), cfg)
        ]
    run_demo(cfg, config, tape, _printer(err), lambda text: err.print(text, soft_wrap=True))


kafka_app = typer.Typer(help="The local Kafka 3.9 broker (KRaft, 127.0.0.1): fetched with Maven, never committed.")
app.add_typer(kafka_app, name="kafka")

PortOpt = Annotated[int, typer.Option("--port", envvar="RISKGUARD_KAFKA_PORT", help="Client port.")]


def _broker(port: int) -> Any:
    from streams.broker import Broker

    return Broker(port=port, controller_port=port + 1)


@kafka_app.command("up")
def kafka_up(
    port: PortOpt = 9092,
    sasl: Annotated[
        bool,
        typer.Option(
            "--sasl",
            help="Client listener SASL_PLAINTEXT with SCRAM-SHA-512 for the user RISKGUARD_KAFKA_USERNAME / "
            "RISKGUARD_KAFKA_PASSWORD (created when the storage is formatted).",
        ),
    ] = False,
    tls_port: Annotated[
        int | None,
        typer.Option("--tls-port", help="With --sasl: also a SASL_SSL listener on this port (self-signed cert)."),
    ] = None,
) -> None:
    """Fetch the jars (once), format storage (once), start the broker and wait until it answers."""
    from dataclasses import replace

    from rich.markup import escape

    from streams.broker import BrokerError, up

    broker = replace(_broker(port), sasl=sasl, tls_port=tls_port)
    try:
        err.print(f"kafka: {up(broker)}")
    except BrokerError as exc:
        err.print(f"[bold red]kafka: {escape(str(exc))}[/]", highlight=False)
        raise typer.Exit(1) from None
    if tls_port is not None:
        err.print(f"kafka: SASL_SSL clients trust {broker.ca_file} (RISKGUARD_KAFKA_CA_FILE)", highlight=False)


@kafka_app.command("down")
def kafka_down(port: PortOpt = 9092) -> None:
    """Stop the broker that `riskguard kafka up` started (and nothing else)."""
    from streams.broker import down

    err.print(f"kafka: {down(_broker(port))}")


@kafka_app.command("status")
def kafka_status(port: PortOpt = 9092) -> None:
    """Say whether a broker answers on the port and whether riskguard started it."""
    from streams.broker import status

    err.print(f"kafka: {status(_broker(port))}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
