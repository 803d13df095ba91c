"""The topic contract as an AsyncAPI 3.0.0 document (SPEC §2, §4; written by `riskguard schema --out DIR`).

The document describes the riskguard application: it *receives* the input topics (bars, fills, signals,
equity, control — produced by market-data feeds, execution services, strategies and operators), *sends*
the output topics (decisions, halts, events, rebalance_runs, deadletter), and both sends and receives
its internal ordered log `risk.sequenced`. Each channel's address is the Kafka topic name (with the
deployment's prefix), its Kafka binding carries the topic and partition count, each message carries its
key (Kafka message binding), its JSON value schema and one realistic example (seed 001's NVDA clip).

Value schemas are the pydantic models' own JSON Schemas — validation mode for inputs (what riskguard
accepts), serialization mode for outputs (what riskguard writes) — collected under
`components.schemas` with every `$ref` pointing there, so the document is self-contained.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from schemas.inputs import INPUT_MODELS
from schemas.outputs import OUTPUT_MODELS
from streams.core.levels.account.controls import sign
from streams.topology import SEQ_HEADER, Topics

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
SCHEMA_REF = "#/components/schemas/{model}"
LOCAL_SERVER = "127.0.0.1:9092"
SEQUENCED = "sequenced"
INPUTS = ("bars", "fills", "signals", "equity", "control")
OUTPUTS = ("decisions", "halts", "events", "rebalance_runs", "deadletter")
CHANNELS = (*INPUTS, SEQUENCED, *OUTPUTS)
"""Every channel of the document, by logical topic name (SPEC §2 plus the internal ordered log)."""

EXAMPLE_CONTROL_KEY = b"example-control-key"
"""The HMAC key the control example is signed with (an example, never a deployment's key)."""


# ----------------------------------------------------------------------------------------------- topics
@dataclass(frozen=True)
class TopicInfo:
    """What the document says about one topic besides its schema."""

    title: str
    key: str  # what the Kafka key is (short)
    key_detail: str  # ... and its exceptions
    key_nullable: bool
    producers: str
    consumers: str


TOPIC_INFO: dict[str, TopicInfo] = {
    "bars": TopicInfo(
        "Market bars",
        "symbol",
        "",
        False,
        "market-data feeds, `riskguard publish`",
        "the riskguard sequencer (the market clock: one partition, one total order of bars)",
    ),
    "fills": TopicInfo(
        "Execution fills",
        "account id",
        "",
        False,
        "execution services, `riskguard publish`",
        "the riskguard sequencer (a repeated `fill_id` is ignored)",
    ),
    "signals": TopicInfo(
        "Strategy signals",
        "account id",
        "",
        False,
        "strategies, `riskguard publish`",
        "the riskguard sequencer (a repeated `signal_id` is ignored)",
    ),
    "equity": TopicInfo(
        "Account equity",
        "account id",
        "",
        False,
        "account and broker services, `riskguard publish`",
        "the riskguard sequencer",
    ),
    "control": TopicInfo(
        "Operator controls",
        "account id",
        "`*` for every account",
        False,
        "operators' tools (signed: hex HMAC-SHA256 over the canonical JSON value, SPEC §8)",
        "the riskguard sequencer (unsigned, forged, expired or replayed controls are dead-lettered)",
    ),
    SEQUENCED: TopicInfo(
        "Sequenced log (internal)",
        "none: each packet goes to an explicit partition, murmur2(account) like Kafka's default partitioner",
        "null; bars and `*` controls are copied into every partition's packet",
        True,
        "the riskguard sequencer",
        "the riskguard level agents (level-market first); record it to check replay parity",
    ),
    "decisions": TopicInfo(
        "Policy decisions",
        "account id",
        "",
        False,
        "the riskguard level-portfolio agent",
        "execution services and audit (dedupe by `decision_id`)",
    ),
    "halts": TopicInfo(
        "Trading-state changes",
        "account id",
        "",
        False,
        "the riskguard level-account agent",
        "execution services, operators and audit (dedupe by `halt_id`)",
    ),
    "events": TopicInfo(
        "Risk events",
        "account id",
        "null for market-wide events such as cluster maps",
        True,
        "the riskguard level agents and sequencer (security notices)",
        "operators, dashboards and audit (dedupe by `event_id`)",
    ),
    "rebalance_runs": TopicInfo(
        "Rebalance runs",
        "account id",
        "",
        False,
        "the riskguard level-portfolio agent",
        "portfolio managers and audit (dedupe by `run_id`)",
    ),
    "deadletter": TopicInfo(
        "Dead letters",
        "source key",
        "the rejected message's own key, null when it had none",
        True,
        "the riskguard sequencer",
        "operators",
    ),
}


# --------------------------------------------------------------------------------------------- examples
def _control_example() -> dict[str, Any]:
    value: dict[str, Any] = {
        "command": "HALT",
        "account": "acct-001",
        "ts": "2024-01-15T11:10:00Z",
        "issued_by": "ops.desk",
        "nonce": "halt-acct-001-20240115-0001",
        "expires_at": "2024-01-15T11:15:00Z",
        "params": {"comment": "manual review after the daily-loss halt"},
    }
    value["signature"] = sign(value, EXAMPLE_CONTROL_KEY)
    return value


_SIGNAL_EXAMPLE: dict[str, Any] = {
    "signal_id": "sig-nvda-0001",
    "account": "acct-001",
    "symbol": "NVDA",
    "ts": "2024-01-15T10:30:00Z",
    "strategy": "momentum",
    "price": 150.0,
    "target_notional": 25000.0,
}

# Seed 001's worked example (NVDA: symbol cap 20k, then the 1.5k per-trade ceiling) through the engine.
_DECISION_EXAMPLE: dict[str, Any] = {
    "decision_id": "dec-c3209e3562239dfc18cf5d97",
    "account": "acct-001",
    "symbol": "NVDA",
    "ts": "2024-01-15T10:30:00.000Z",
    "origin": "signal",
    "source_id": "sig-nvda-0001",
    "action": "CLIP",
    "side": "BUY",
    "qty": 10.0,
    "requested_qty": 160.0,
    "price": 150.0,
    "notional": 1500.0,
    "layer": "per_trade",
    "reason": "max_notional",
    "clips": [
        {"layer": "per_symbol", "reason": "symbol_cap", "before": 25000.0, "after": 20000.0},
        {"layer": "per_trade", "reason": "max_notional", "before": 19000.0, "after": 1500.0},
    ],
    "facts": {
        "origin": "signal",
        "price": 150.0,
        "filled_qty": 0.0,
        "pending_qty": 0.0,
        "equity": 100000.0,
        "trading_state": "ACTIVE",
        "exit": False,
        "exit_reason": "",
        "exit_layer": "per_symbol",
        "requested_target": 25000.0,
        "committed_target": None,
        "check_signal_change": True,
        "signal_change_threshold": 0.05,
        "vetoed": False,
        "symbol_cap": 20000.0,
        "weight_cap": None,
        "band_pct": 0.05,
        "band_enabled": True,
        "rebalance_to": "edge",
        "max_notional": 1500.0,
        "lot_size": 5.0,
        "min_order_notional": 200.0,
        "quota_headroom": None,
        "cluster_id": "c:NVDA",
        "cluster_exposure": 0.0,
        "cluster_cap": 25000.0,
        "cluster_critical": 50000.0,
        "group": "Default",
        "group_exposure": 0.0,
        "group_cap": 40000.0,
        "group_critical": None,
        "gross": 0.0,
        "gross_cap": 100000.0,
        "budget_cap": None,
        "net": 0.0,
        "net_cap": 20000.0,
        "position_critical": 30000.0,
        "vol_scale": 1.0,
        "quota_measure": None,
        "quota_used": None,
        "quota_rate": 1.0,
        "cash": None,
        "buying_power": None,
        "beta": None,
        "beta_exposure": None,
        "beta_cap": None,
        "band": [19000.0, 21000.0],
        "heat": 0.029999999999999995,
    },
    "mode": "enforce",
    "config_version": "sha256:0037da6ac8fe",
}


def _examples(topics: Topics) -> dict[str, tuple[str, str, str | None, dict[str, Any]]]:
    """logical topic -> (example name, summary, Kafka key, value)."""
    signal_event = orjson.loads(orjson.dumps(INPUT_MODELS["signals"].model_validate(_SIGNAL_EXAMPLE).model_dump()))
    return {
        "bars": (
            "nvda-bar",
            "A one-minute NVDA bar",
            "NVDA",
            {
                "symbol": "NVDA",
                "ts": "2024-01-15T10:30:00Z",
                "open": 149.2,
                "high": 150.6,
                "low": 148.9,
                "close": 150.0,
                "volume": 1250000.0,
            },
        ),
        "fills": (
            "nvda-fill",
            "The execution of the clipped NVDA decision",
            "acct-001",
            {
                "fill_id": "fill-20240115-000042",
                "account": "acct-001",
                "symbol": "NVDA",
                "side": "BUY",
                "qty": 10.0,
                "price": 150.02,
                "ts": "2024-01-15T10:30:02Z",
                "fee": 0.35,
                "decision_id": _DECISION_EXAMPLE["decision_id"],
            },
        ),
        "signals": ("nvda-target", "A strategy asks for 25k of NVDA (seed 001)", "acct-001", dict(_SIGNAL_EXAMPLE)),
        "equity": (
            "start-of-day-equity",
            "Start-of-day equity of the account",
            "acct-001",
            {
                "account": "acct-001",
                "ts": "2024-01-15T10:00:00Z",
                "equity": 100000.0,
                "balance": 100000.0,
                "cash": 100000.0,
            },
        ),
        "control": (
            "operator-halt",
            f"A signed HALT (signature over the value with the example key {EXAMPLE_CONTROL_KEY.decode()!r})",
            "acct-001",
            _control_example(),
        ),
        SEQUENCED: (
            "sequenced-signal",
            "The NVDA signal as the sequencer writes it to the ordered log (a packet of one item)",
            None,
            {"items": [{"kind": "signal", "account": "acct-001", "event": signal_event, "notes": {}}]},
        ),
        "decisions": (
            "nvda-clip",
            "Seed 001: target 25k NVDA, capped at 20k per symbol, clipped to the 1.5k per-trade ceiling",
            "acct-001",
            copy.deepcopy(_DECISION_EXAMPLE),
        ),
        "halts": (
            "daily-loss-halt",
            "Equity fell 5% from the day's start: the account is halted until the next trading day",
            "acct-001",
            {
                "halt_id": "halt-d78d62b7436b8e2ba50127d3",
                "account": "acct-001",
                "ts": "2024-01-15T11:00:00.000Z",
                "state": "HALTED",
                "previous_state": "ACTIVE",
                "reason": "daily_loss",
                "until": "2024-01-16T00:00:00.000Z",
                "facts": {
                    "equity": 95000.0,
                    "day_start_equity": 100000.0,
                    "day_start_balance": 100000.0,
                    "peak_equity": 100000.0,
                    "initial_balance": 100000.0,
                    "daily_loss_pct": 0.05,
                    "intraday_drawdown_pct": 0.05,
                    "total_loss_pct": 0.05,
                },
            },
        ),
        "events": (
            "concentration-warning",
            "A buy takes the NVDA position past its 20% warning weight",
            "acct-001",
            {
                "event_id": "evt-dd39f5986fc0bae696b01db8",
                "kind": "concentration_warning",
                "account": "acct-001",
                "ts": "2024-01-15T10:30:00.000Z",
                "details": {
                    "bucket": "position",
                    "name": "NVDA",
                    "weight": 0.21428571428571427,
                    "warn": 0.2,
                    "symbol": "NVDA",
                },
            },
        ),
        "rebalance_runs": (
            "rebalance-preview",
            "A previewed rebalance run (seed 004 §9): policy, inputs, proposed orders, summary",
            "acct-001",
            {
                "run_id": "run-5f0c2a9d41e7b3c86a1d0e42",
                "account": "acct-001",
                "ts": "2024-01-15T15:10:00.000Z",
                "status": "preview",
                "trigger": "control",
                "policy": {
                    "budget_pct": 0.1,
                    "drift_band_abs_pct": 0.02,
                    "drift_band_rel_pct": 0.15,
                    "max_trades": 10,
                    "min_trade_value": 2000.0,
                    "max_position_weight": 0.15,
                    "tilt_mode": "neutral",
                    "targets": {"NVDA": 0.12, "AAPL": 0.1},
                },
                "inputs": {
                    "portfolio_value": 100000.0,
                    "cash": 77710.0,
                    "target_source": "policy",
                    "holdings": [
                        {"symbol": "AAPL", "qty": 40.0, "price": 178.5, "value": 7140.0, "weight": 0.0714},
                        {"symbol": "NVDA", "qty": 100.0, "price": 151.5, "value": 15150.0, "weight": 0.1515},
                    ],
                    "target_weights": {"AAPL": 0.1, "NVDA": 0.12},
                },
                "orders": [
                    {
                        "symbol": "NVDA",
                        "side": "SELL",
                        "qty": 20.0,
                        "price": 151.5,
                        "notional": 3030.0,
                        "reasons": ["drift"],
                    },
                    {
                        "symbol": "AAPL",
                        "side": "BUY",
                        "qty": 16.0,
                        "price": 178.5,
                        "notional": 2856.0,
                        "reasons": ["drift"],
                    },
                ],
                "summary": {
                    "turnover_pct": 5.886,
                    "max_drift_before": 0.0315,
                    "max_drift_after": 0.0012,
                    "trades": 2,
                    "buys": 1,
                    "sells": 1,
                    "budget": 10000.0,
                    "budget_used_pct": 58.86,
                },
            },
        ),
        "deadletter": (
            "inconsistent-bar",
            "A bar whose high is below its low, rejected by the sequencer",
            "AAPL",
            {
                "source": {"topic": topics.name("bars"), "partition": 0, "offset": 1842, "line": None},
                "key": "AAPL",
                "raw": '{"symbol":"AAPL","ts":"2024-01-15T10:05:00Z","open":185.2,"high":184.9,"low":185.0,'
                '"close":185.1,"volume":0}',
                "error": "bars: invalid bars value: value: Value error, inconsistent OHLC: need low <= min(open, "
                "close) <= max(open, close) <= high, got open=185.2 high=184.9 low=185.0 close=185.1",
                "ts": "2024-01-15T10:05:00Z",
            },
        ),
    }


# ---------------------------------------------------------------------------------------------- schemas
def _model_name(logical: str) -> str:
    if logical == SEQUENCED:
        return "SequencedPacket"
    model = INPUT_MODELS.get(logical) or OUTPUT_MODELS[logical]
    return model.__name__


def _rewrite_refs(node: Any) -> Any:
    """Point every pydantic `#/$defs/X` reference at `#/components/schemas/X`."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = SCHEMA_REF.format(model=value.removeprefix("#/$defs/"))
            else:
                out[key] = _rewrite_refs(value)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(value) for value in node]
    return node


def _model_schemas() -> dict[str, Any]:
    """The JSON Schemas of every input (validation mode) and output (serialization mode) model."""
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((model, "validation") for model in INPUT_MODELS.values()),
        *((model, "serialization") for model in OUTPUT_MODELS.values()),
    ]
    _, top = models_json_schema(pairs, ref_template=SCHEMA_REF)
    schemas: dict[str, Any] = _rewrite_refs(top.get("$defs", {}))
    for logical in (*INPUTS, *OUTPUTS):
        name = _model_name(logical)
        if name not in schemas:  # pydantic renames a model whose two modes differ: we use one mode per model
            raise RuntimeError(f"JSON Schema of {name} missing from {sorted(schemas)}")
    return dict(sorted(schemas.items()))


def _sequenced_schema() -> dict[str, Any]:
    kinds = {"bar": "bars", "fill": "fills", "signal": "signals", "equity": "equity", "control": "control"}
    return {
        "title": "SequencedItem",
        "description": "One validated input event on the internal ordered log (`streams.topology.encode_item`); "
        "the event is the validated input model's fields as it holds them (timestamps as epoch milliseconds, "
        "enums by value): the sequencer validates once, the level chain reads it without validating again.",
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "account", "event", "notes"],
        "properties": {
            "kind": {"type": "string", "enum": list(kinds)},
            "account": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "description": "The account the event belongs to; null for bars and `*` controls.",
            },
            "event": {"type": "object", "description": "The input value, as validated by the sequencer."},
            "notes": {
                "type": "object",
                "additionalProperties": True,
                "description": "What Level 2 adds to a bar for the later levels (prices, ATR, regime; "
                "`assignment` on a cluster map); empty on an account's own items.",
            },
        },
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": kind}}},
                "then": {"properties": {"event": {"$ref": SCHEMA_REF.format(model=INPUT_MODELS[topic].__name__)}}},
            }
            for kind, topic in kinds.items()
        ],
    }


def _packet_schema() -> dict[str, Any]:
    return {
        "title": "SequencedPacket",
        "description": "Consecutive items of one partition's ordered log (`streams.topology.encode_packets`); "
        "a packet is framing only: its items are applied in order exactly as if each were a message.",
        "type": "object",
        "additionalProperties": False,
        "required": ["items"],
        "properties": {
            "items": {"type": "array", "minItems": 1, "items": {"$ref": SCHEMA_REF.format(model="SequencedItem")}}
        },
    }


HEADERS_SCHEMA = "KafkaHeaders"


def _headers_schema() -> dict[str, Any]:
    return {
        "title": HEADERS_SCHEMA,
        "type": "object",
        "description": "Kafka headers (UTF-8 values). riskguard copies an input message's headers onto its "
        "sequenced copies and onto its dead letter.",
        "properties": {
            SEQ_HEADER: {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "Tape position set by `riskguard publish --ordered`, which waits until every "
                "earlier line has been sequenced before it sends a line of another topic. A sequenced packet "
                "repeats this header once per item it carries.",
            },
            "rg-t0": {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "Internal packets only: wall-clock ms at which the oldest input of the packet was "
                "produced; feeds the decision-latency histogram, never a decision.",
            },
            "rg-src": {
                "type": "string",
                "pattern": "^[a-z]+[|][0-9]+[|][0-9.]+[|][0-9]+$",
                "description": "Outputs of the levels: `level|partition|tag|index`, the item and position that "
                "produced the message. A level that takes a partition over reads these back and does not "
                "publish again what its predecessor already sent for an item it applies again after a crash.",
            },
        },
    }


# --------------------------------------------------------------------------------------------- document
def _package_version() -> str:
    try:
        return version("riskguard")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


def _direction(logical: str) -> str:
    return "input" if logical in INPUTS else "output" if logical in OUTPUTS else "internal"


def _channel(logical: str, topics: Topics, partitions: int) -> dict[str, Any]:
    info = TOPIC_INFO[logical]
    address = topics.name(logical)
    count = 1 if logical == "bars" else partitions
    message = _model_name(logical)
    key = f"{info.key} ({info.key_detail})" if info.key_detail else info.key
    return {
        "address": address,
        "title": info.title,
        "summary": f"{_direction(logical).capitalize()} topic `{address}`, keyed by {info.key}.",
        "description": (
            f"Kafka topic `{address}`: {count} partition{'s' if count > 1 else ''}, key = {key}, value = one "
            f"UTF-8 JSON object ({message}) per message.\n\n"
            f"Produced by {info.producers}.\n\nConsumed by {info.consumers}."
        ),
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        "bindings": {"kafka": {"topic": address, "partitions": count, "bindingVersion": KAFKA_BINDING_VERSION}},
    }


def _message(logical: str, example: tuple[str, str, str | None, dict[str, Any]]) -> dict[str, Any]:
    info = TOPIC_INFO[logical]
    name = _model_name(logical)
    model = INPUT_MODELS.get(logical) or OUTPUT_MODELS.get(logical)
    doc = (model.__doc__ or "").strip() if model is not None else "One input event on the ordered log."
    key_schema: dict[str, Any] = {
        "type": ["string", "null"] if info.key_nullable else "string",
        "description": f"{info.key} ({info.key_detail})" if info.key_detail else info.key,
    }
    example_name, summary, example_key, value = example
    message: dict[str, Any] = {
        "name": name,
        "title": name,
        "summary": doc,
        "contentType": "application/json",
    }
    if logical in INPUTS or logical in (SEQUENCED, *OUTPUTS):
        message["headers"] = {"$ref": SCHEMA_REF.format(model=HEADERS_SCHEMA)}
    message["payload"] = {"$ref": SCHEMA_REF.format(model=name)}
    message["bindings"] = {"kafka": {"key": key_schema, "bindingVersion": KAFKA_BINDING_VERSION}}
    key_note = "no key" if example_key is None else f"key `{example_key}`"
    message["examples"] = [{"name": example_name, "summary": f"{summary} ({key_note}).", "payload": value}]
    return message


def _operation(logical: str, action: str, summary: str) -> tuple[str, dict[str, Any]]:
    operation_id = action + "".join(part.capitalize() for part in logical.split("_"))
    return operation_id, {
        "action": action,
        "channel": {"$ref": f"#/channels/{logical}"},
        "title": f"{action.capitalize()} {TOPIC_INFO[logical].title[0].lower()}{TOPIC_INFO[logical].title[1:]}",
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{logical}/messages/{_model_name(logical)}"}],
    }


def _operations() -> dict[str, Any]:
    ops = [
        *(
            _operation(
                logical,
                "receive",
                f"Produced by {TOPIC_INFO[logical].producers}; the sequencer validates each message and writes "
                "it to the ordered log, or a bad one to the dead letters.",
            )
            for logical in INPUTS
        ),
        _operation(
            SEQUENCED,
            "send",
            "The sequencer writes each valid input to its account's partition (bars and `*` controls to every "
            "partition), keeping the producer's headers.",
        ),
        _operation(SEQUENCED, "receive", "The level agents read the ordered log, one event at a time per partition."),
        *(
            _operation(
                logical, "send", f"Written by {TOPIC_INFO[logical].producers}; read by {TOPIC_INFO[logical].consumers}."
            )
            for logical in OUTPUTS
        ),
    ]
    return dict(ops)


def asyncapi_document(prefix: str = "", partitions: int = 4) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of every riskguard topic, for a topic prefix and a partition count."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    topics = Topics(prefix)
    examples = _examples(topics)
    schemas = _model_schemas()
    schemas["SequencedItem"] = _sequenced_schema()
    schemas["SequencedPacket"] = _packet_schema()
    schemas[HEADERS_SCHEMA] = _headers_schema()
    prefix_note = f"carry the prefix `{prefix}`" if prefix else "have no prefix"
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:riskguard:topics",
        "info": {
            "title": "riskguard",
            "version": _package_version(),
            "description": (
                "Real-time hierarchical trading-risk guard running as Faust agents over Kafka. It consumes "
                "market bars, fills, strategy signals, account equity and signed operator controls, and "
                "publishes policy decisions, halts, risk events, rebalance runs and dead letters.\n\n"
                f"Topic names {prefix_note}. Account-keyed topics are co-partitioned ({partitions} partitions); "
                "the bar topic has one. Values are UTF-8 JSON objects, one per message. Outputs carry "
                "deterministic ids (`decision_id`, `halt_id`, `event_id`, `run_id`): read with "
                "`isolation.level=read_committed`, drop ids you have already seen, and rely on order per key "
                "(account) only. Consumer guide: docs/consumers.md."
            ),
            "license": {"name": "Proprietary"},
            "tags": [{"name": "risk"}, {"name": "kafka"}, {"name": "faust"}],
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": LOCAL_SERVER,
                "protocol": "kafka",
                "protocolVersion": "3.9",
                "title": "Local broker",
                "description": "The project's single-node KRaft broker (`riskguard kafka up`, docker-compose); "
                "elsewhere set KAFKA_BOOTSTRAP_SERVERS.",
            }
        },
        "channels": {logical: _channel(logical, topics, partitions) for logical in CHANNELS},
        "operations": _operations(),
        "components": {
            "schemas": schemas,
            "messages": {_model_name(logical): _message(logical, examples[logical]) for logical in CHANNELS},
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    """Plain YAML: repeated sub-documents are written out, never as anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None  # multi-line descriptions as literal blocks
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_NoAliasDumper.add_representer(str, _represent_str)


def write_asyncapi(out_dir: Path, prefix: str = "", partitions: int = 4) -> Path:
    """Write `asyncapi.yaml` and `asyncapi.json` into `out_dir` (created if missing); returns the YAML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    document = asyncapi_document(prefix=prefix, partitions=partitions)
    yaml_path = out_dir / "asyncapi.yaml"
    yaml_path.write_text(
        yaml.dump(document, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=120),
        encoding="utf-8",
    )
    (out_dir / "asyncapi.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return yaml_path


__all__ = ["ASYNCAPI_VERSION", "CHANNELS", "TOPIC_INFO", "asyncapi_document", "write_asyncapi"]
