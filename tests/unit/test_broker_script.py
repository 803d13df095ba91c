"""The local broker script's start-up reporting (streams/broker.py), without starting Java."""

from __future__ import annotations

from pathlib import Path

from streams.broker import Broker, _exit_tail


def test_exit_tail_when_the_fatal_error_is_only_in_server_log_then_it_names_it(tmp_path: Path) -> None:
    broker = Broker(root=tmp_path, port=21001, controller_port=21002)
    broker.logs.mkdir(parents=True)
    (broker.logs / "stdout.log").write_text("", encoding="utf-8")
    earlier = "[2026-12-07 10:00:00] ERROR an earlier run's failure\n"
    now = (
        "[2026-12-07 11:00:00] INFO starting\n"
        "[2026-12-07 11:00:01] ERROR [KafkaServer id=1] Fatal error during startup\n"
        "org.apache.kafka.common.KafkaException: Socket server failed to bind to 127.0.0.1:21001: "
        "Address already in use.\n"
    )
    (broker.logs / "server.log").write_text(earlier + now, encoding="utf-8")

    tail = _exit_tail(broker, since=len(earlier.encode()))

    assert "Address already in use" in tail
    assert "Fatal error during startup" in tail
    assert "earlier run" not in tail


def test_exit_tail_when_no_log_says_anything_then_it_says_so(tmp_path: Path) -> None:
    broker = Broker(root=tmp_path, port=21003, controller_port=21004)
    broker.logs.mkdir(parents=True)
    (broker.logs / "stdout.log").write_text("", encoding="utf-8")

    assert _exit_tail(broker, since=0) == "(no output in stdout.log or server.log)"
