"""The AsyncAPI document of the topics (streams/asyncapi.py) and the consumer guide (docs/consumers.md).

The document is validated by the official AsyncAPI parser (`@asyncapi/parser`, npm) through
`tools/asyncapi/validate.mjs`: the AsyncAPI 3.0.0 JSON Schema (Kafka bindings included), `$ref`
resolution and the parser's rules, plus every message example against its payload schema (Ajv).
The session installs the validator with `npm ci` from the committed lock file when it is missing or
stale (about 10 s, 55 MB under tools/asyncapi/node_modules); a failed install fails the tests.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from schemas.inputs import INPUT_MODELS
from schemas.outputs import OUTPUT_MODELS
from streams.asyncapi import CHANNELS, EXAMPLE_CONTROL_KEY, asyncapi_document, write_asyncapi
from streams.core.levels.account.controls import check_signature
from streams.testing import TapeBuilder
from streams.topology import decode_packet, encode_packets
from tests.conftest import SEED001_YAML

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "asyncapi"
STAMP = TOOL / "node_modules" / ".riskguard-installed"
CONSUMERS_DOC = ROOT / "docs" / "consumers.md"
INSTALL_TIMEOUT_S = 300

# SPEC §2 (plus the internal ordered log): logical name -> (Kafka topic, key, direction).
SPEC_TOPICS = {
    "bars": ("market.bars", "symbol", "in"),
    "fills": ("exec.fills", "account", "in"),
    "signals": ("strategy.signals", "account", "in"),
    "equity": ("account.equity", "account", "in"),
    "control": ("risk.control", "account", "in"),
    "decisions": ("risk.decisions", "account", "out"),
    "halts": ("risk.halts", "account", "out"),
    "events": ("risk.events", "account", "out"),
    "rebalance_runs": ("risk.rebalance-runs", "account", "out"),
    "deadletter": ("risk.deadletter", "source key", "out"),
    "sequenced": ("risk.sequenced", "account", "internal"),
}

Validate = Callable[..., dict[str, dict[str, Any]]]


# ------------------------------------------------------------------------------------------- validator
def _lock_digest() -> str:
    return hashlib.sha256((TOOL / "package-lock.json").read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def validator() -> Iterator[Validate]:
    """Runs the official AsyncAPI parser on files (results by path); installs it with `npm ci` when needed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed to validate the AsyncAPI document (tools/asyncapi)")
    lock_path = Path(tempfile.gettempdir()) / f"riskguard-asyncapi-{hashlib.sha256(bytes(TOOL)).hexdigest()[:12]}.lock"
    with lock_path.open("w") as lock:  # xdist workers share one node_modules: install once
        fcntl.flock(lock, fcntl.LOCK_EX)
        digest = _lock_digest()
        if not STAMP.is_file() or STAMP.read_text() != digest:
            try:
                done = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                    cwd=TOOL,
                    capture_output=True,
                    text=True,
                    timeout=INSTALL_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                pytest.fail(f"`npm ci` in {TOOL} did not finish within {INSTALL_TIMEOUT_S} s")
            if done.returncode != 0:
                pytest.fail(f"`npm ci` in {TOOL} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
            STAMP.write_text(digest)

    def validate(*files: Path) -> dict[str, dict[str, Any]]:
        done = subprocess.run(
            [node, str(TOOL / "validate.mjs"), *map(str, files)], capture_output=True, text=True, timeout=120
        )
        results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert len(results) == len(files), f"validator output: {done.stdout}\n{done.stderr}"
        assert done.returncode == (0 if all(r["valid"] for r in results) else 1), done.stderr
        return {r["file"]: r for r in results}

    yield validate


def _codes(result: dict[str, Any]) -> set[str]:
    return {error["code"] for error in result["errors"]}


# ------------------------------------------------------------------------------------- the documents
@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document()


def _broken_documents(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Documents the validator must refuse, one defect each."""
    missing_message = copy.deepcopy(doc)
    missing_message["channels"]["decisions"]["messages"]["Decision"] = {"$ref": "#/components/messages/Verdict"}
    bad_example = copy.deepcopy(doc)
    bad_example["components"]["messages"]["Decision"]["examples"][0]["payload"]["action"] = "MAYBE"
    bad_binding = copy.deepcopy(doc)
    bad_binding["channels"]["bars"]["bindings"]["kafka"]["partitions"] = 0
    foreign_message = copy.deepcopy(doc)
    foreign_message["operations"]["sendDecisions"]["messages"] = [{"$ref": "#/channels/halts/messages/Halt"}]
    v2_action = copy.deepcopy(doc)
    v2_action["operations"]["sendDecisions"]["action"] = "publish"
    return {
        "missing_message": missing_message,
        "bad_example": bad_example,
        "bad_binding": bad_binding,
        "foreign_message": foreign_message,
        "v2_action": v2_action,
    }


@pytest.fixture(scope="module")
def results(validator: Validate, document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One validator run over the written documents (default and prefixed) and the broken ones."""
    out = tmp_path_factory.mktemp("asyncapi")
    write_asyncapi(out / "default")
    write_asyncapi(out / "prefixed", prefix="prod.", partitions=12)
    files = [out / "default" / "asyncapi.yaml", out / "default" / "asyncapi.json", out / "prefixed" / "asyncapi.yaml"]
    for name, broken in _broken_documents(document).items():
        path = out / f"broken_{name}.json"
        path.write_text(json.dumps(broken), encoding="utf-8")
        files.append(path)
    by_file = validator(*files)
    return {f"{path.parent.name}/{path.name}": by_file[str(path)] for path in files}


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("name", ["default/asyncapi.yaml", "default/asyncapi.json", "prefixed/asyncapi.yaml"])
def test_written_document_when_validated_by_asyncapi_parser_then_valid_without_warnings(
    results: dict[str, Any], name: str
) -> None:
    result = results[name]
    assert result["valid"], result["errors"]
    assert result["warnings"] == []


@pytest.mark.parametrize(
    ("broken", "code"),
    [
        ("missing_message", "invalid-ref"),
        ("bad_example", "example-does-not-match-schema"),
        ("bad_binding", "asyncapi-document-resolved"),
        ("foreign_message", "asyncapi3-operation-messages-from-referred-channel"),
        ("v2_action", "asyncapi-document-resolved"),
    ],
)
def test_broken_document_when_validated_then_refused_with_its_defect(
    results: dict[str, Any], broken: str, code: str
) -> None:
    (result,) = [r for name, r in results.items() if name.endswith(f"/broken_{broken}.json")]
    assert not result["valid"]
    assert code in _codes(result), result["errors"]


def test_document_declares_asyncapi_3_0_0_with_package_version_and_local_kafka_server(
    document: dict[str, Any],
) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "riskguard"
    assert document["info"]["version"] == importlib.metadata.version("riskguard")
    assert document["servers"] == {"local": document["servers"]["local"]}
    assert (document["servers"]["local"]["host"], document["servers"]["local"]["protocol"]) == (
        "127.0.0.1:9092",
        "kafka",
    )


def test_document_refs_when_walked_then_all_local_and_resolvable(document: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    refs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        assert ref.startswith("#/") and "$defs" not in ref, ref
        node: Any = document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        assert isinstance(node, dict), ref


# ------------------------------------------------------------------------------------ topics and keys
@pytest.mark.parametrize(("prefix", "partitions"), [("", 4), ("prod.", 12)])
def test_every_spec_topic_when_documented_then_channel_with_prefixed_address_key_and_partitions(
    prefix: str, partitions: int
) -> None:
    doc = asyncapi_document(prefix=prefix, partitions=partitions)

    assert set(doc["channels"]) == set(SPEC_TOPICS) == set(CHANNELS)
    for logical, (topic, key, _) in SPEC_TOPICS.items():
        channel = doc["channels"][logical]
        assert channel["address"] == f"{prefix}{topic}"
        kafka = channel["bindings"]["kafka"]
        assert kafka["topic"] == f"{prefix}{topic}"
        assert kafka["partitions"] == (1 if logical == "bars" else partitions), logical
        (ref,) = [m["$ref"] for m in channel["messages"].values()]
        message = doc["components"]["messages"][ref.rsplit("/", 1)[1]]
        assert key in message["bindings"]["kafka"]["key"]["description"], logical


def test_bars_channel_when_any_partition_count_then_one_partition() -> None:
    assert asyncapi_document(partitions=8)["channels"]["bars"]["bindings"]["kafka"]["partitions"] == 1


def test_partitions_when_below_one_then_value_error() -> None:
    with pytest.raises(ValueError, match="partitions"):
        asyncapi_document(partitions=0)


def test_operations_when_listed_then_app_receives_inputs_sends_outputs_and_both_on_sequenced(
    document: dict[str, Any],
) -> None:
    actions: dict[str, set[str]] = {}
    for operation in document["operations"].values():
        logical = operation["channel"]["$ref"].rsplit("/", 1)[1]
        actions.setdefault(logical, set()).add(operation["action"])
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"#/channels/{logical}/messages/")

    expected = {name: {"receive"} if d == "in" else {"send"} for name, (_, _, d) in SPEC_TOPICS.items()}
    expected["sequenced"] = {"send", "receive"}
    assert actions == expected


# ------------------------------------------------------------------------------------------- examples
def _example(doc: dict[str, Any], logical: str) -> dict[str, Any]:
    (ref,) = [m["$ref"] for m in doc["channels"][logical]["messages"].values()]
    (example,) = doc["components"]["messages"][ref.rsplit("/", 1)[1]]["examples"]
    payload: dict[str, Any] = example["payload"]
    return payload


@pytest.mark.parametrize("logical", sorted(INPUT_MODELS))
def test_input_example_when_validated_by_its_model_then_accepted(document: dict[str, Any], logical: str) -> None:
    INPUT_MODELS[logical].model_validate(_example(document, logical))


@pytest.mark.parametrize("logical", sorted(OUTPUT_MODELS))
def test_output_example_when_validated_by_its_model_then_accepted_and_serialized_unchanged(
    document: dict[str, Any], logical: str
) -> None:
    payload = _example(document, logical)
    assert OUTPUT_MODELS[logical].model_validate(payload).model_dump(mode="json") == payload


def test_sequenced_example_when_decoded_then_the_signal_example_and_encodes_back(document: dict[str, Any]) -> None:
    payload = _example(document, "sequenced")

    (item,) = decode_packet(orjson.dumps(payload))

    assert item.event == INPUT_MODELS["signals"].model_validate(_example(document, "signals"))
    assert [orjson.loads(packet) for packet in encode_packets([item])] == [payload]


def test_control_example_when_checked_with_example_key_then_signature_valid(document: dict[str, Any]) -> None:
    assert check_signature(_example(document, "control"), EXAMPLE_CONTROL_KEY) is None


def test_deadletter_example_when_prefixed_then_source_topic_prefixed() -> None:
    doc = asyncapi_document(prefix="prod.")
    assert _example(doc, "deadletter")["source"]["topic"] == "prod.market.bars"


def test_decision_example_when_seed001_signal_replayed_then_engine_decides_the_same(document: dict[str, Any]) -> None:
    signal = _example(document, "signals")
    tape = TapeBuilder().equity("acct-001", "2024-01-15T10:00:00Z", 100_000)
    tape.flat_bar("NVDA", "2024-01-15T10:00:00Z", 150.0)
    tape.add("signals", signal["account"], signal)

    (decision,) = tape.run(yaml.safe_load(SEED001_YAML)).decisions

    example = _example(document, "decisions")
    actual = decision.model_dump(mode="json")
    fields = ("decision_id", "account", "symbol", "ts", "action", "side", "qty", "requested_qty", "layer", "reason")
    assert {f: actual[f] for f in fields} == {f: example[f] for f in fields}
    assert actual["clips"] == example["clips"]


# -------------------------------------------------------------------------------------------- writing
def test_write_asyncapi_when_called_then_yaml_and_json_hold_the_document(tmp_path: Path) -> None:
    path = write_asyncapi(tmp_path / "out", prefix="x.", partitions=2)

    assert path == tmp_path / "out" / "asyncapi.yaml"
    expected = json.loads(json.dumps(asyncapi_document(prefix="x.", partitions=2)))
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == expected
    assert json.loads((tmp_path / "out" / "asyncapi.json").read_text(encoding="utf-8")) == expected
    assert "&id" not in path.read_text(encoding="utf-8")  # no YAML anchors/aliases


# ------------------------------------------------------------------------------------- consumer guide
def _code_blocks(language: str) -> list[str]:
    text = CONSUMERS_DOC.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_consumer_guide_python_examples_when_compiled_then_valid_syntax() -> None:
    blocks = _code_blocks("python")
    assert len(blocks) >= 2
    for block in blocks:
        compile(block, str(CONSUMERS_DOC), "exec")


def test_consumer_guide_aiokafka_example_when_read_then_read_committed_dedupe_and_prints_the_fields() -> None:
    (consumer,) = [block for block in _code_blocks("python") if "AIOKafkaConsumer" in block]
    assert 'isolation_level="read_committed"' in consumer
    assert '"risk.decisions"' in consumer and "decision_id" in consumer
    assert 'print(d["account"], d["action"], d["side"], d["qty"], d["symbol"])' in consumer


def test_consumer_guide_when_read_then_kcat_command_and_contract_links() -> None:
    text = CONSUMERS_DOC.read_text(encoding="utf-8")
    kcat = "kcat -b 127.0.0.1:9092 -t risk.decisions -C -o beginning -e -X isolation.level=read_committed -f '%k %s\\n'"
    assert kcat in text
    assert "riskguard schema --out" in text and "asyncapi.yaml" in text and "AsyncAPI 3.0.0" in text
