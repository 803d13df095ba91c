"""The audit from the log alone (SPEC §7): re-derivation per partition, matching by id, recordings of the log."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from schemas.config import Config, load_config
from streams.audit.core import AuditInputError, Auditor, audit_log, log_record, replay_log, sequence_tape
from streams.audit.kafka import mismatch_event, source_of
from streams.cli import app
from streams.core.engine import Engine
from streams.gen import GenParams, write_tape
from streams.tape import replay

PARTITIONS = 4


@cache
def _session() -> tuple[Config, tuple[bytes, ...]]:
    config = load_config(None)
    sink = io.BytesIO()
    write_tape(GenParams(symbols=6, accounts=5, days=1, session_minutes=90, seed=19, signal_every=5), sink, config)
    lines = sink.getvalue().splitlines()
    last = [orjson.loads(line) for line in lines if b'"topic":"equity"' in line][-1]["value"]
    crash = {**last, "ts": last["ts"] + 60_000, "equity": last["equity"] * 0.85}  # a drawdown halt, its flattening
    return config, (*lines, orjson.dumps({"topic": "equity", "key": last["account"], "value": crash}))


def _log() -> list[tuple[int, int, bytes]]:
    config, lines = _session()
    packets = sequence_tape(config, lines, PARTITIONS, per_packet=16)
    return [(p, offset, raw) for p, log in enumerate(packets) for offset, raw in enumerate(log)]


def _published() -> list[tuple[str, dict[str, Any]]]:
    """What a deployment published for the session: the replay's decisions and halts, as JSON values."""
    config, lines = _session()
    sink = io.BytesIO()
    replay(Engine(config), lines, sink)
    envelopes = [orjson.loads(line) for line in sink.getvalue().splitlines()]
    return [(e["topic"], e["value"]) for e in envelopes if e["topic"] in ("decisions", "halts")]


def _traded(published: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return next(v for t, v in published if t == "decisions" and v["action"] in ("ALLOW", "CLIP") and v["qty"] > 1)


def test_audit_when_each_partition_of_the_log_is_re_derived_on_its_own_then_every_published_output_verifies() -> None:
    config, _ = _session()
    published = _published()

    report = audit_log(config, _log(), published)

    assert report.ok, [f.text() for f in report.findings]
    assert report.counts["verified"] == len(published)
    assert report.counts["verified_decisions"] > 20
    assert report.counts["verified_halts"] >= 1


def test_audit_when_a_decision_has_another_quantity_then_a_mismatch_names_its_id_and_the_field() -> None:
    config, _ = _session()
    published = _published()
    target = _traded(published)
    tampered = [(t, {**v, "qty": v["qty"] - 1} if v is target else v) for t, v in published]

    report = audit_log(config, _log(), tampered)

    assert not report.ok
    mismatches = [f for f in report.findings if f.kind == "mismatch"]
    assert [f.ident for f in mismatches] == [target["decision_id"]]
    assert "qty: recorded" in mismatches[0].detail
    assert mismatches[0].account == target["account"]


def test_audit_when_a_copy_with_another_quantity_follows_the_original_then_the_copy_is_a_mismatch() -> None:
    config, _ = _session()
    published = _published()
    target = _traded(published)

    report = audit_log(config, _log(), [*published, ("decisions", {**target, "qty": target["qty"] + 3})])

    mismatches = [f for f in report.findings if f.kind == "mismatch"]
    assert [f.ident for f in mismatches] == [target["decision_id"]]
    assert mismatches[0].detail.startswith("a copy that differs from the re-derived one: qty")


def test_audit_when_a_derived_decision_was_never_published_then_it_is_missing() -> None:
    config, _ = _session()
    published = _published()
    target = _traded(published)

    report = audit_log(config, _log(), [(t, v) for t, v in published if v is not target])

    assert [(f.kind, f.ident) for f in report.findings] == [("missing", target["decision_id"])]


def test_audit_when_a_published_decision_derives_from_nothing_then_it_is_extra() -> None:
    config, _ = _session()
    published = _published()
    invented = {**_traded(published), "decision_id": "dec-000000000000000000000000"}

    report = audit_log(config, _log(), [*published, ("decisions", invented)])

    assert [(f.kind, f.ident) for f in report.findings] == [("extra", "dec-000000000000000000000000")]


def test_audit_when_a_decision_is_published_twice_then_a_duplicate_that_allow_duplicates_tolerates() -> None:
    config, _ = _session()
    published = _published()
    target = _traded(published)

    report = audit_log(config, _log(), [*published, ("decisions", dict(target))])

    assert [(f.kind, f.ident) for f in report.findings] == [("duplicate", target["decision_id"])]
    assert not report.ok
    report.allow_duplicates = True
    assert report.ok


def test_audit_when_since_is_set_then_outputs_of_earlier_event_time_are_not_compared() -> None:
    config, _ = _session()
    published = _published()
    decisions = [v for t, v in published if t == "decisions"]
    middle = decisions[len(decisions) // 2]
    cut = middle["ts"]
    early = next(v for v in decisions if v["ts"] < cut)
    without_early = [(t, v) for t, v in published if v is not early]

    from schemas.timefmt import parse_ts

    report = audit_log(config, _log(), without_early, since=parse_ts(cut))

    assert report.ok, [f.text() for f in report.findings]
    assert 0 < report.counts["verified"] < len(published)


def test_expire_when_the_auditor_is_behind_the_log_then_a_published_output_is_not_called_extra() -> None:
    config, _ = _session()
    auditor = Auditor(config)
    value = _traded(_published())

    auditor.recorded("decisions", value, now=0.0, after=(2, 40))
    behind = auditor.expire(now=100.0, grace=5.0)
    auditor.rederived_upto(2, 41)
    past = auditor.expire(now=100.0, grace=5.0)

    assert behind == []
    assert [(f.kind, f.ident) for f in past] == [("extra", value["decision_id"])]


def test_expire_when_the_output_topics_are_not_read_to_their_end_then_nothing_is_called_missing() -> None:
    config, _ = _session()
    auditor = Auditor(config)
    value = _traded(_published())
    auditor.derived("decisions", value, now=0.0)

    assert auditor.expire(now=100.0, grace=5.0, recorded_caught_up=False) == []
    assert [f.kind for f in auditor.expire(now=100.0, grace=5.0, recorded_caught_up=True)] == ["missing"]


def test_auditor_when_it_remembers_few_ids_then_memory_stays_bounded_and_recent_copies_are_still_checked() -> None:
    config, _ = _session()
    published = _published()
    auditor = Auditor(config, remember=3)
    for topic, value in published:
        auditor.derived(topic, value, now=0.0)
        auditor.recorded(topic, value, now=0.0)
    last_topic, last = published[-1]

    copy = auditor.recorded(last_topic, {**last, "ts": "2099-01-01T00:00:00.000Z"}, now=1.0)

    assert len(auditor.settled) == 3
    assert not auditor.derived_pending and not auditor.recorded_pending
    assert [f.kind for f in copy] == ["mismatch"]


def test_audit_when_a_log_record_is_not_a_packet_then_it_is_unreadable_and_the_partition_goes_on() -> None:
    config, _ = _session()
    log = _log()
    poisoned = [*log[:1], (log[0][0], 10_000, b"{not json"), *log[1:]]

    report = audit_log(config, poisoned, _published())

    assert [(f.kind, f.topic, f.ident) for f in report.findings] == [("unreadable", "sequenced", f"{log[0][0]}@10000")]
    assert report.counts["verified"] == len(_published())


def _recording(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A recording of the sequenced log as `riskguard record --topics sequenced` writes it, partitions interleaved."""
    config, lines = _session()
    packets = sequence_tape(config, lines, PARTITIONS, per_packet=16)
    rows = []
    for offset in range(max(len(log) for log in packets)):
        for partition, log in enumerate(packets):
            if offset < len(log):
                envelope = {"topic": "sequenced", "key": None, "value": orjson.loads(log[offset])}
                rows.append(orjson.dumps({**envelope, "partition": partition, "offset": offset}))
    recording, tape, cfg = tmp_path / "sequenced.jsonl", tmp_path / "tape.jsonl", tmp_path / "c.yaml"
    recording.write_bytes(b"\n".join(rows) + b"\n")
    tape.write_bytes(b"\n".join(lines) + b"\n")
    cfg.write_text("{}\n", encoding="utf-8")
    return recording, tape, cfg


def _decisions(path: Path) -> dict[str, Any]:
    envelopes = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return {e["value"]["decision_id"]: e["value"] for e in envelopes if e["topic"] == "decisions"}


def test_replay_when_given_a_recording_of_the_sequenced_log_then_the_same_decisions_as_the_input_tape(
    tmp_path: Path,
) -> None:
    recording, tape, cfg = _recording(tmp_path)
    runner = CliRunner()

    from_log = runner.invoke(app, ["replay", str(recording), "--config", str(cfg), "--out", str(tmp_path / "a")])
    from_tape = runner.invoke(app, ["replay", str(tape), "--config", str(cfg), "--out", str(tmp_path / "b")])
    runner.invoke(app, ["replay", str(recording), "--config", str(cfg), "--out", str(tmp_path / "c")])

    assert from_log.exit_code == 0, from_log.output
    assert from_tape.exit_code == 0, from_tape.output
    assert "each partition on its own" in from_log.output
    assert _decisions(tmp_path / "a") == _decisions(tmp_path / "b")
    assert len(_decisions(tmp_path / "a")) > 20
    assert (tmp_path / "a").read_bytes() == (tmp_path / "c").read_bytes()


def test_verify_when_given_a_recording_of_the_sequenced_log_then_passes_and_names_a_tampered_decision(
    tmp_path: Path,
) -> None:
    recording, tape, cfg = _recording(tmp_path)
    outputs = tmp_path / "out.jsonl"
    runner = CliRunner()
    runner.invoke(app, ["replay", str(tape), "--config", str(cfg), "--out", str(outputs)])
    good = runner.invoke(app, ["verify", str(recording), str(outputs), "--config", str(cfg)])
    lines = outputs.read_bytes().splitlines()
    at = next(i for i, line in enumerate(lines) if b'"action":"ALLOW"' in line)
    envelope = orjson.loads(lines[at])
    envelope["value"]["qty"] += 1
    lines[at] = orjson.dumps(envelope)
    outputs.write_bytes(b"\n".join(lines) + b"\n")

    bad = runner.invoke(app, ["verify", str(recording), str(outputs), "--config", str(cfg)])

    assert good.exit_code == 0, good.output
    assert bad.exit_code == 1
    assert envelope["value"]["decision_id"] in bad.output


def test_replay_when_a_sequenced_record_has_no_partition_then_a_clear_error_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    path.write_bytes(b'{"topic": "sequenced", "key": null, "value": {"items": []}}\n')

    result = CliRunner().invoke(app, ["replay", str(path), "--out", str(tmp_path / "o")])

    assert result.exit_code == 2
    assert "without its partition" in result.output


def test_log_record_when_the_recording_mixes_input_topics_then_it_says_a_tape_is_one_or_the_other() -> None:
    with pytest.raises(AuditInputError, match=r"line 3: topic 'bars'.*either input topics"):
        log_record(b'{"topic": "bars", "key": "X", "value": {}}', 3)


def test_replay_log_when_a_star_control_is_in_every_partition_then_each_account_halts_and_each_id_is_written_once() -> (
    None
):
    config, _ = _session()
    halt = {"command": "HALT", "account": "*", "ts": 2000, "issued_by": "ops", "nonce": "n1", "expires_at": 10**8}
    control = {"kind": "control", "account": None, "event": {**halt, "params": {}, "signature": "ab"}, "notes": {}}

    def equity(account: str) -> dict[str, Any]:
        return {
            "kind": "equity",
            "account": account,
            "event": {"account": account, "ts": 1000, "equity": 1e3},
            "notes": {},
        }

    rows = [
        orjson.dumps({"topic": "sequenced", "key": None, "value": {"items": [equity(account), control]}, **where})
        for account, where in (("a", {"partition": 0, "offset": 0}), ("b", {"partition": 1, "offset": 0}))
    ]
    sink = io.BytesIO()

    replay_log(config, rows, sink)

    written = [orjson.loads(line) for line in sink.getvalue().splitlines()]
    assert sorted((e["value"]["account"], e["value"]["state"]) for e in written if e["topic"] == "halts") == [
        ("a", "HALTED"),
        ("b", "HALTED"),
    ]
    assert [e["value"]["kind"] for e in written if e["topic"] == "events"] == ["control_applied"]  # merged by id


def test_source_of_when_the_chain_marked_an_output_then_its_sequenced_partition_and_offset() -> None:
    assert source_of([("rg-src", b"chain|3|1207.4|0")]) == (3, 1207)
    assert source_of([("rg-src", b"market|0|5|1")]) is None
    assert source_of(None) is None


def test_mismatch_event_when_built_twice_for_one_finding_then_the_same_event_id() -> None:
    config, _ = _session()
    published = _published()
    target = _traded(published)
    report = audit_log(config, _log(), [*published, ("decisions", {**target, "qty": 0.5})])
    finding = next(f for f in report.findings if f.kind == "mismatch")

    first, second = mismatch_event(finding), mismatch_event(finding)

    assert first.event_id == second.event_id
    assert first.kind == "audit_mismatch"
    assert first.details["id"] == target["decision_id"]
    assert first.account == target["account"]


def test_audit_command_when_since_is_not_a_time_then_a_clear_error_and_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["audit", "--since", "yesterday"])

    assert result.exit_code == 2
    assert "--since" in result.output
    assert "ISO 8601" in result.output


def test_bench_audit_core_when_a_small_tape_then_every_output_verified_at_a_positive_rate() -> None:
    from bench.audit import core_rate

    config, lines = _session()

    figures = core_rate(list(lines), config, PARTITIONS)

    assert figures["verified"] == len(_published())
    assert figures["rate"] > 0
