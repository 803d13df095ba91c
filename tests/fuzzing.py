"""Hypothesis strategies of adversarial tape lines for every input topic (SPEC §3, §4, §8).

Not a test module: `tests/unit/test_fuzz_inputs.py` draws from it. The strategies yield raw tape lines
(bytes): JSON envelopes `{"topic", "key", "value"}` for bars, fills, signals, equity and control, and
broken envelopes. Lines are written by hand, token by token, so that they can hold what JSON libraries
never write: duplicate keys, `NaN` / `Infinity` / `1e400` literals, lone surrogates, nesting 1000 deep,
invalid UTF-8, messages over 1 MiB.

`adversarial_case` also says what the input limits require of each line (`Case.expect`):

- "accept": a valid value, possibly with fields exactly at their limits;
- "reject": a field beyond a limit, a wrong type, a missing or unknown field, a broken envelope, a
  message over 1 MiB: the line must be dead-lettered;
- "any": the limits leave it open (duplicate keys, names padded with whitespace, float epoch ms, ISO
  week dates, a byte-order mark...).

Every value that can validate names accounts and symbols containing "FZ" (`FZ1`, `FZA`, ...), never
`*` in a signed control, and, when `bar_times` is given, puts every bar that can validate at one of
those times: mixed into a session of other accounts, such lines leave that session's decisions alone.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import orjson
from hypothesis import strategies as st

from streams.core.levels.account.controls import sign

Verdict = Literal["ok", "bad", "unsure"]
Expect = Literal["accept", "reject", "any"]

INPUT_TOPICS = ("bars", "fills", "signals", "equity", "control")
FUZZ_TOPICS = (*INPUT_TOPICS, "envelope")  # "envelope": broken envelopes around valid values

# ------------------------------------------------------------------------------------------ limits
TS_MIN_MS = 0  # 1970-01-01T00:00:00Z
TS_END_MS = 7_258_118_400_000  # 2200-01-01T00:00:00Z, excluded
MESSAGE_MAX_BYTES = 1024 * 1024
ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@/#+=~-]{1,128}")
CONTROL_ACCOUNT_PATTERN = re.compile(r"\*|[A-Za-z0-9_.:@/#+=~-]{1,128}")
SYMBOL_PATTERN = re.compile(r"[A-Za-z0-9_./:^=-]{1,32}")
SIGNATURE_PATTERN = re.compile(r"[0-9a-fA-F]{0,128}")
PARAMS_MAX_DEPTH = 4
MONEY_MIN = 1e-6
PARAMS_MAX_ENTRIES = 64
PARAMS_MAX_TEXT = 1024
PARAMS_MAX_BYTES = 8 * 1024

# kind -> (lowest, lowest allowed?, highest allowed): the input limits the schemas enforce (prices
# 0 < x <= 1e9, quantities 0 < x <= 1e12, ...); a change of a limit is a change of this table.
NUMBER_BOUNDS: dict[str, tuple[float, bool, float]] = {
    "price": (1e-8, True, 1e9),
    "qty": (0.0, False, 1e12),
    "volume": (0.0, True, 1e15),
    "fee": (0.0, True, 1e12),
    "money": (0.0, True, 1e15),
    "signed_money": (-1e15, True, 1e15),
    "weight": (-100.0, True, 100.0),
}
NAME_PATTERNS = {
    "id": ID_PATTERN,
    "account": ID_PATTERN,
    "control_account": CONTROL_ACCOUNT_PATTERN,
    "symbol": SYMBOL_PATTERN,
}
ENUMS = {
    "side": ("BUY", "SELL"),
    "direction": ("LONG", "SHORT", "FLAT"),
    "command": ("HALT", "RESUME", "REBALANCE", "SET_REGIME"),
}

FUZZ_CONTROL_KEY = b"riskguard-fuzz-control-key"
FUZZ_ACCOUNTS = ("FZ1", "FZ2", "FZ3")
FUZZ_SYMBOLS = ("FZA", "FZB", "FZ.C")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: str
    required: bool = True
    nullable: bool = False


FIELDS: dict[str, tuple[FieldSpec, ...]] = {
    "bars": (
        FieldSpec("symbol", "symbol"),
        FieldSpec("ts", "time"),
        FieldSpec("open", "price"),
        FieldSpec("high", "price"),
        FieldSpec("low", "price"),
        FieldSpec("close", "price"),
        FieldSpec("volume", "volume", required=False),
    ),
    "fills": (
        FieldSpec("fill_id", "id"),
        FieldSpec("account", "account"),
        FieldSpec("symbol", "symbol"),
        FieldSpec("side", "side"),
        FieldSpec("qty", "qty"),
        FieldSpec("price", "price"),
        FieldSpec("ts", "time"),
        FieldSpec("fee", "fee", required=False),
        FieldSpec("decision_id", "id", required=False, nullable=True),
    ),
    "signals": (
        FieldSpec("signal_id", "id"),
        FieldSpec("account", "account"),
        FieldSpec("symbol", "symbol"),
        FieldSpec("ts", "time"),
        FieldSpec("strategy", "id", required=False),
        FieldSpec("price", "price", required=False, nullable=True),
        FieldSpec("target_notional", "signed_money", required=False, nullable=True),
        FieldSpec("target_weight", "weight", required=False, nullable=True),
        FieldSpec("direction", "direction", required=False, nullable=True),
        FieldSpec("atr", "price", required=False, nullable=True),
    ),
    "equity": (
        FieldSpec("account", "account"),
        FieldSpec("ts", "time"),
        FieldSpec("equity", "money"),
        FieldSpec("balance", "money", required=False, nullable=True),
        FieldSpec("cash", "signed_money", required=False, nullable=True),
    ),
    "control": (
        FieldSpec("command", "command"),
        FieldSpec("account", "control_account"),
        FieldSpec("ts", "time"),
        FieldSpec("issued_by", "id"),
        FieldSpec("nonce", "id"),
        FieldSpec("expires_at", "time"),
        FieldSpec("params", "params", required=False),
        FieldSpec("signature", "signature", required=False, nullable=True),
    ),
}
TARGETS = ("target_notional", "target_weight", "direction")
OHLC = ("open", "high", "low", "close")


# ------------------------------------------------------------------------ what the limits require
def time_ok(ms: object) -> bool:
    """An epoch-ms time inside [1970-01-01, 2200-01-01)."""
    return isinstance(ms, int) and not isinstance(ms, bool) and TS_MIN_MS <= ms < TS_END_MS


def number_ok(kind: str, value: object) -> bool:
    """A JSON number inside the bounds of a numeric field kind (finite, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    lo, lo_allowed, hi = NUMBER_BOUNDS[kind]
    if kind == "money" and 0 < value < MONEY_MIN:
        return False  # equity and balance: 0, or at least a millionth of a currency unit
    return (value > lo or (lo_allowed and value == lo)) and value <= hi


def name_ok(kind: str, value: object) -> bool:
    """An id, account, control account or symbol of the allowed length and characters."""
    return isinstance(value, str) and NAME_PATTERNS[kind].fullmatch(value) is not None


def signature_ok(value: object) -> bool:
    return value is None or (isinstance(value, str) and SIGNATURE_PATTERN.fullmatch(value) is not None)


def params_problem(params: object) -> str | None:
    """None when a control's params keep the limits; else the first limit they break.

    Depth counts containers: the params object is 1, `{"a": {"b": 1}}` is 2. Entries are the items
    of every object and array inside. Strings (keys too) count characters; the size is the params'
    compact UTF-8 JSON (orjson), as the message carries it.
    """
    if not isinstance(params, dict):
        return "params is not an object"
    entries = 0
    stack: list[tuple[object, int]] = [(params, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > PARAMS_MAX_DEPTH:
                return f"nested {depth} deep"
            items = list(node.items()) if isinstance(node, dict) else [(None, v) for v in node]
            entries += len(items)
            for key, child in items:
                if key is not None and len(key) > PARAMS_MAX_TEXT:
                    return f"a key of {len(key)} characters"
                stack.append((child, depth + 1))
        elif isinstance(node, str):
            if len(node) > PARAMS_MAX_TEXT:
                return f"a string of {len(node)} characters"
        elif isinstance(node, float):
            if not math.isfinite(node):
                return f"a non-finite number {node!r}"
        elif node is not None and not isinstance(node, bool | int):
            return f"a {type(node).__name__}, not a JSON value"
    if entries > PARAMS_MAX_ENTRIES:
        return f"{entries} entries"
    size = len(orjson.dumps(params))
    if size > PARAMS_MAX_BYTES:
        return f"{size} bytes of JSON"
    return None


def model_violations(topic: str, model: object) -> dict[str, list[str]]:
    """Every limit a validated input model breaks, by group: times, numbers, names, params."""
    found: dict[str, list[str]] = {"times": [], "numbers": [], "names": [], "params": []}
    for spec in FIELDS[topic]:
        value = getattr(model, spec.name)
        if value is None and spec.nullable:
            continue
        if spec.kind == "time":
            if not time_ok(value):
                found["times"].append(f"{spec.name}={value!r}")
        elif spec.kind in NUMBER_BOUNDS:
            if not number_ok(spec.kind, value):
                found["numbers"].append(f"{spec.name}={value!r}")
        elif spec.kind in NAME_PATTERNS:
            if not name_ok(spec.kind, value):
                found["names"].append(f"{spec.name}={_short(value)}")
        elif spec.kind == "params":
            problem = params_problem(value)
            if problem is not None:
                found["params"].append(f"params: {problem}")
        elif spec.kind == "signature" and not signature_ok(value):
            found["params"].append(f"signature={_short(value)}")
    return found


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


# ----------------------------------------------------------------------------- JSON, token by token
@dataclass(frozen=True, slots=True)
class Raw:
    """JSON text written verbatim."""

    text: str


@dataclass(frozen=True, slots=True)
class Obj:
    """A JSON object as ordered pairs: duplicate keys allowed."""

    pairs: tuple[tuple[str, Any], ...]


class _NotJson:
    def __repr__(self) -> str:
        return "NOT_JSON"


NOT_JSON: Any = _NotJson()
"""What `Gen.parsed` holds when no JSON parser yields a value (NaN literal, lone surrogate...)."""


@dataclass(frozen=True, slots=True)
class Gen:
    """One generated JSON value: what is written, what a parser yields, what the limits say of it."""

    token: Any
    parsed: Any
    verdict: Verdict


def render(token: Any) -> str:
    """JSON text of a token: Python JSON values, `Raw` text and `Obj` pairs (recursive)."""
    if isinstance(token, Raw):
        return token.text
    if isinstance(token, Obj):
        return "{" + ",".join(f"{_string(k)}:{render(v)}" for k, v in token.pairs) + "}"
    if isinstance(token, dict):
        return "{" + ",".join(f"{_string(k)}:{render(v)}" for k, v in token.items()) + "}"
    if isinstance(token, list | tuple):
        return "[" + ",".join(render(v) for v in token) + "]"
    if isinstance(token, str):
        return _string(token)
    if token is None or isinstance(token, bool):
        return json.dumps(token)
    if isinstance(token, int):
        return str(token)
    if isinstance(token, float):
        if not math.isfinite(token):
            raise ValueError("non-finite floats are written as Raw tokens")
        return repr(token)
    raise TypeError(f"cannot render {type(token).__name__}")


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def escaped(text: str) -> Raw:
    """A string written with \\u escapes for every non-ASCII character."""
    return Raw(json.dumps(text, ensure_ascii=True))


def json_number(value: int | float) -> Any:
    """What orjson yields for a number written as `render(value)` (ints past 64 bits become floats)."""
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        try:
            return float(value)
        except OverflowError:
            return NOT_JSON  # orjson: "number is infinity when parsed as double"
    return value


# ---------------------------------------------------------------------------------- field values
def _gen(token: Any, verdict: Verdict, parsed: Any = None) -> Gen:
    return Gen(token, token if parsed is None else parsed, verdict)


_LONG = "x" * 100_000
_HUGE_PAD = "p" * (MESSAGE_MAX_BYTES + 64 * 1024)
_NON_FINITE = ("NaN", "-NaN", "Infinity", "-Infinity", "inf", "-inf", "nan", "1e999", "-1e999", "1e400", "-1e400")
_BAD_NUMBER_TEXT = ("1E400", "+1", ".5", "1.", "01", "0x10", "1_000", "--1", "1e", "Infinity1")
_NUMBER_STRINGS = ("NaN", "Infinity", "-Infinity", "inf", "1e400", "1.5", "0", "-0", "1e9", "", " 1", "١٢٣")
_WRONG_TYPES: tuple[Any, ...] = (True, False, [], {}, [1.0], {"value": 1}, Raw('{"a":[{}]}'))
_LONE_SURROGATES = (Raw('"FZ\\ud800"'), Raw('"\\udc00FZ"'), Raw('"FZ\\ud800\\u0041"'), Raw('"FZ\\udfff\\ud800"'))


def _bounded_floats(kind: str) -> st.SearchStrategy[float]:
    lo, _, hi = NUMBER_BOUNDS[kind]
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


def _number_edges(kind: str) -> list[int | float]:
    lo, _, hi = NUMBER_BOUNDS[kind]
    return [
        hi,
        int(hi),
        int(hi) + 1,
        math.nextafter(hi, math.inf),
        -hi,
        lo,
        math.nextafter(lo, math.inf),
        math.nextafter(lo, -math.inf),
        0,
        0.0,
        -0.0,
        5e-324,
        -5e-324,
        1e-300,
        1e308,
        -1e308,
        sys.float_info.max,
        -sys.float_info.max,
        2**53 + 1,
        2**63,
        2**64 - 1,
        2**64,
        -(2**63),
        -(2**63) - 1,
        10**400,
        1,
        -1,
        100.00000000000001,
        1e15 + 1,
        1e12 * (1 + 2**-52),
    ]


def _number_gen(kind: str, value: int | float) -> Gen:
    parsed = json_number(value)
    return Gen(value, parsed, "ok" if parsed is not NOT_JSON and number_ok(kind, parsed) else "bad")


def fixed_numbers(kind: str) -> list[Gen]:
    """Edges, extremes, NaN and Infinity however spelt, numbers as strings, for a numeric field."""
    return [
        *(_number_gen(kind, v) for v in _number_edges(kind)),
        *(Gen(Raw(t), NOT_JSON, "bad") for t in _NON_FINITE + _BAD_NUMBER_TEXT),
        *(_gen(t, "bad") for t in _NUMBER_STRINGS),
    ]


def number_values(kind: str) -> st.SearchStrategy[Gen]:
    """Edges, extremes and arbitrary numbers for a numeric field, each with its verdict."""
    return st.one_of(
        st.sampled_from(fixed_numbers(kind)),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda v: _number_gen(kind, v)),
        _bounded_floats(kind).map(lambda v: _number_gen(kind, v)),
        st.integers().map(lambda v: _number_gen(kind, v)),
    )


def _normal_number(kind: str) -> st.SearchStrategy[Gen]:
    ranges = {
        "price": (0.01, 10_000.0),
        "qty": (0.001, 1e6),
        "volume": (0.0, 1e7),
        "fee": (0.0, 100.0),
        "money": (1_000.0, 1e7),
        "signed_money": (-1e6, 1e6),
        "weight": (-1.0, 1.0),
    }
    lo, hi = ranges[kind]
    return st.one_of(
        st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False),
        st.integers(min_value=max(1, math.ceil(lo)), max_value=max(1, int(hi))),
    ).map(lambda v: _number_gen(kind, v))


# ------------------------------------------------------------------------------------------- times
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def iso_of(ms: int, offset_minutes: int = 0) -> str:
    """ISO 8601 text of an epoch-ms time, at an offset (Z for UTC)."""
    local = (_EPOCH + timedelta(milliseconds=ms)).astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = local.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if offset_minutes == 0 else text


_T = 1_705_312_800_000  # 2024-01-15T10:00:00Z
_TIME_FIXED: tuple[Gen, ...] = (
    # exactly at the limits, valid
    _gen(0, "ok"),
    _gen(TS_END_MS - 1, "ok"),
    _gen("0", "ok", 0),
    _gen(str(TS_END_MS - 1), "ok", TS_END_MS - 1),
    _gen("01705312800000", "ok", _T),
    _gen("1970-01-01T00:00:00Z", "ok", 0),
    _gen("1970-01-01T00:00:00.000+00:00", "ok", 0),
    _gen("1970-01-01T01:00:00+01:00", "ok", 0),
    _gen("1969-12-31T19:00:00-05:00", "ok", 0),
    _gen("2199-12-31T23:59:59.999Z", "ok", TS_END_MS - 1),
    _gen("2200-01-01T05:29:59.999+05:30", "ok", TS_END_MS - 1),
    _gen("2024-01-15T10:00:00.000Z", "ok", _T),
    # just beyond, far past and far future, not a time at all
    _gen(-1, "bad"),
    _gen(TS_END_MS, "bad"),
    _gen(253_402_300_800_000, "bad"),  # year 10000
    _gen(-62_135_596_800_000, "bad"),  # year 1
    _gen(1e308, "bad"),
    _gen(-1e308, "bad"),
    _gen(sys.float_info.max, "bad"),
    _gen(2**63, "bad"),
    _gen(2**64, "bad", json_number(2**64)),
    _gen(-(2**63), "bad"),
    _gen(10**30, "bad", json_number(10**30)),
    _gen(5e-324, "bad"),
    _gen(0.5, "bad"),
    _gen(-0.5, "bad"),
    _gen(1_705_312_800_000.5, "bad"),
    _gen("-1", "bad"),
    _gen("-0", "bad"),
    _gen("+0", "bad"),
    _gen("-1705312800000", "bad"),
    _gen("١٢٣", "bad"),
    _gen("１２３", "bad"),
    _gen("٠", "bad"),
    _gen("١٧٠٥٣١٢٨٠٠٠٠٠", "bad"),
    _gen("1e3", "bad"),
    _gen("0x1F", "bad"),
    _gen("1_000", "bad"),
    _gen("1705312800000.0", "bad"),
    _gen("9999-12-31T23:59:59Z", "bad"),
    _gen("9999-12-31T23:59:59.999999+00:00", "bad"),
    _gen("0001-01-01T00:00:00+00:00", "bad"),
    _gen("0001-01-01T00:00:00+14:00", "bad"),
    _gen("0001-01-01T00:00:00-14:00", "bad"),
    _gen("0000-01-01T00:00:00Z", "bad"),
    _gen("10000-01-01T00:00:00Z", "bad"),
    _gen("+10000-01-01T00:00:00Z", "bad"),
    _gen("-0001-01-01T00:00:00Z", "bad"),
    _gen("1969-12-31T23:59:59.999Z", "bad"),
    _gen("1969-12-31T23:59:59.999999Z", "bad"),
    _gen("1970-01-01T00:00:00+00:01", "bad"),
    _gen("2200-01-01T00:00:00Z", "bad"),
    _gen("2200-01-01T00:00:00+00:00", "bad"),
    _gen("2199-12-31T23:59:59.999-00:01", "bad"),
    _gen("2024-01-15T10:00:00", "bad"),
    _gen("2024-01-15", "bad"),
    _gen("2024-01-15T10:00:00+25:00", "bad"),
    _gen("2024-01-15T10:00:00+24:00", "bad"),
    _gen("2024-13-01T00:00:00Z", "bad"),
    _gen("2024-02-30T00:00:00Z", "bad"),
    _gen("2024-01-15T24:00:01Z", "bad"),
    _gen("٢٠٢٤-٠١-١٥T١٠:٠٠:٠٠Z", "bad"),
    _gen("２０２４-01-15T10:00:00Z", "bad"),
    _gen("2024-01-15T10:00:00Z\u0000", "bad"),
    _gen("2024-01-15T10:00:00\u0000+05:00", "bad"),
    _gen("2024-01-15T10:00:00+05:00\u0000", "bad"),
    _gen("-000", "bad"),
    _gen("0-0", "bad"),
    _gen("١٧٠٥٣١٢٨٠٠٠٠٠" + "Z", "bad"),
    _gen("2024-01-15T10:00:00Z\u200f", "bad"),
    _gen("", "bad"),
    _gen(" ", "bad"),
    _gen("Z", "bad"),
    _gen("T", "bad"),
    _gen("now", "bad"),
    _gen("NaN", "bad"),
    _gen("Infinity", "bad"),
    _gen("inf", "bad"),
    _gen("null", "bad"),
    _gen(_LONG, "bad"),
    _gen("1" * 100_000, "bad"),
    _gen(True, "bad"),
    _gen(False, "bad"),
    _gen([], "bad"),
    _gen({}, "bad"),
    _gen([_T], "bad"),
    _gen({"$date": _T}, "bad"),
    *(Gen(Raw(text), NOT_JSON, "bad") for text in _NON_FINITE),
    # the limits leave these open
    _gen("2016-12-31T23:59:60Z", "unsure", 1_483_228_800_000),
    _gen("2024-W03-1T10:00:00Z", "unsure", _T),
    _gen("20240115T100000Z", "unsure", _T),
    _gen("2024-01-15 10:00:00Z", "unsure", _T),
    _gen("2024-01-15T10:00Z", "unsure", _T),
    _gen("2024-01-15T10Z", "unsure", _T),
    _gen("2024-01-15T10:00:00z", "unsure", _T),
    _gen("2024-01-15t10:00:00Z", "unsure", _T),
    _gen("2024-01-15T10:00:00,5Z", "unsure", _T + 500),
    _gen("2024-01-15T10:00:00.1234567Z", "unsure", _T + 123),
    _gen("2024-01-15T10:00:00+00:00:30", "unsure", _T - 30_000),
    _gen("2024-01-15T10:00:00-00:00", "unsure", _T),
    _gen(" 1705312800000", "unsure", _T),
    _gen("1705312800000 ", "unsure", _T),
    _gen("2024-01-15T10:00:00Z" + " " * 100, "unsure", _T),
    _gen(1_705_312_800_000.0, "unsure", _T),
    _gen(0.0, "unsure", 0),
    _gen(-0.0, "unsure", 0),
)

_OFFSETS = st.integers(min_value=-1439, max_value=1439)


def _rendered_time(ms: int) -> st.SearchStrategy[Gen]:
    """A valid time written as int, ISO Z, ISO with an offset, a digit string or a float."""
    return st.one_of(
        st.just(Gen(ms, ms, "ok")),
        st.just(Gen(iso_of(ms), ms, "ok")),
        _OFFSETS.map(lambda m: Gen(iso_of(ms, m), ms, "ok")),
        st.just(Gen(str(ms), ms, "ok")),
        st.just(Gen(float(ms), ms, "unsure")),
    )


def _datetime_gen(moment: datetime, z: bool) -> Gen:
    ms = epoch_ms(moment)
    text = moment.isoformat()
    if z:
        text = text.replace("+00:00", "Z")
    return Gen(text, ms, "ok" if time_ok(ms) else "bad")


def _float_time_gen(value: float) -> Gen:
    if value.is_integer() and time_ok(int(value)):
        return Gen(value, int(value), "unsure")
    return Gen(value, NOT_JSON, "bad")


_ZONES = _OFFSETS.map(lambda m: timezone(timedelta(minutes=m)))
_AWARE = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_ZONES)
_AWARE_OUTSIDE = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(1969, 12, 30), timezones=_ZONES),
    st.datetimes(min_value=datetime(2200, 1, 2), max_value=datetime(9999, 12, 30), timezones=_ZONES),
)


def fixed_times(span: Collection[int] | None = None) -> list[Gen]:
    """The fixed adversarial times; with `span`, only those that must be refused."""
    return [g for g in _TIME_FIXED if g.verdict == "bad"] if span is not None else list(_TIME_FIXED)


def time_values(span: Collection[int] | None = None) -> st.SearchStrategy[Gen]:
    """Adversarial times, each with its verdict; with `span`, a time that can validate is in `span`."""
    if span is not None:
        inside = sorted(span)
        return st.one_of(
            st.sampled_from(fixed_times(span)),
            st.one_of(st.integers(max_value=-1), st.integers(min_value=TS_END_MS)).map(
                lambda v: Gen(v, json_number(v), "bad")
            ),
            st.tuples(_AWARE_OUTSIDE, st.booleans()).map(lambda a: _datetime_gen(*a)),
            st.sampled_from(inside).flatmap(_rendered_time),
        )
    return st.one_of(
        st.sampled_from(_TIME_FIXED),
        st.integers().map(lambda v: Gen(v, json_number(v), "ok" if time_ok(v) else "bad")),
        st.integers(min_value=0, max_value=10**15).map(lambda v: Gen(str(v), v, "ok" if time_ok(v) else "bad")),
        st.tuples(_AWARE, st.booleans()).map(lambda a: _datetime_gen(*a)),
        st.floats(allow_nan=False, allow_infinity=False).map(_float_time_gen),
        st.integers(min_value=TS_MIN_MS, max_value=TS_END_MS - 1).flatmap(_rendered_time),
    )


def _normal_time(span: Collection[int] | None) -> st.SearchStrategy[Gen]:
    if span is not None:
        return st.sampled_from(sorted(span)).flatmap(_rendered_time)
    return st.integers(min_value=1_600_000_000_000, max_value=1_800_000_000_000).flatmap(_rendered_time)


# ------------------------------------------------------------------------------------------- names
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@/#+=~-"
_SYMBOL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:^=-"
_ODD_NAMES = (
    "",
    " ",
    "FZ 1",
    "FZ\u00001",
    "FZ\u200f1",
    "\u202eFZ1",
    "FZ\u200b",
    "FZ😀",
    "FZé",
    "FZ١٢٣",
    "FZ\\1",
    'FZ"1',
    "FZ'1",
    "FZ<script>",
    "FZ%00",
    "FZ,1",
    "FZ;1",
    "FZ\t1",
    "FZ\x7f",
    "FZ\u2028",
    "FZ" + "x" * 100_000,
    " FZ1",
    "FZ1\n",
    "\u00a0FZ1",
    "FZ1\u3000",
    "FZ1\x1f",
    "FZ1\u0085",
)


def _name_gen(kind: str, text: str, ascii_escapes: bool = False) -> Gen:
    pattern = NAME_PATTERNS[kind]
    verdict: Verdict = "ok" if pattern.fullmatch(text) else "unsure" if pattern.fullmatch(text.strip()) else "bad"
    return Gen(escaped(text) if ascii_escapes else text, text, verdict)


def fixed_names(kind: str) -> list[Gen]:
    """Ids, accounts or symbols at and beyond their limits, odd characters, lone surrogates."""
    longest = 32 if kind == "symbol" else 128
    chars = _SYMBOL_CHARS if kind == "symbol" else _ID_CHARS
    texts = [
        "FZ" + "x" * (longest - 2),
        "FZ" + "x" * (longest - 1),
        "FZ" + chars[62:],
        "FZ.B",
        "^FZ",
        "FZ/USD",
        "FZ=F",
        "FZ#1",
        "FZ@1",
        "FZ+1",
        "FZ~1",
        "*",
        *_ODD_NAMES,
    ]
    return [
        *(_name_gen(kind, text, ascii_escapes) for text in texts for ascii_escapes in (False, True)),
        *(Gen(raw, NOT_JSON, "bad") for raw in _LONE_SURROGATES),
    ]


def name_values(kind: str) -> st.SearchStrategy[Gen]:
    """Adversarial ids, accounts or symbols, each with its verdict (every candidate contains "FZ")."""
    longest = 32 if kind == "symbol" else 128
    chars = _SYMBOL_CHARS if kind == "symbol" else _ID_CHARS
    return st.one_of(
        st.sampled_from(fixed_names(kind)),
        st.text(alphabet=chars, max_size=longest + 2).map(lambda s: _name_gen(kind, "FZ" + s)),
        st.tuples(st.text(max_size=40), st.booleans()).map(lambda a: _name_gen(kind, "FZ" + a[0], a[1])),
    )


def _normal_name(kind: str) -> st.SearchStrategy[Gen]:
    if kind in ("account", "control_account"):
        return st.sampled_from(FUZZ_ACCOUNTS).map(lambda s: Gen(s, s, "ok"))
    if kind == "symbol":
        return st.sampled_from(FUZZ_SYMBOLS).map(lambda s: Gen(s, s, "ok"))
    return st.integers(min_value=0, max_value=10**9).map(lambda n: Gen(f"FZ-{n}", f"FZ-{n}", "ok"))


def fixed_enums(kind: str) -> list[Gen]:
    """Every member of an enum field, near misses and wrong types."""
    good = ENUMS[kind]
    bad: list[Any] = [
        *(g.lower() for g in good),
        *(g.title() for g in good),
        "",
        "HOLD",
        "SHUTDOWN",
        "DELETE",
        good[0] + "\u0000",
        good[0] + "\u200f",
        good[0][0],
        1,
        0,
        ["BUY"],
        {"v": good[0]},
        _LONG,
    ]
    return [
        *(Gen(v, v, "ok") for v in good),
        *(Gen(v, v, "bad") for v in bad),
        *(Gen(v, v, "unsure") for v in (f" {good[0]}", f"{good[-1]} ", f"{good[0]}\n")),
        *(Gen(raw, NOT_JSON, "bad") for raw in _LONE_SURROGATES),
    ]


# ------------------------------------------------------------------------------------------ params
def _nested(depth: int, leaf: Any = 1) -> Any:
    """An object `depth` containers deep (the outer object counts as 1)."""
    value = leaf
    for level in range(depth - 1):
        value = {f"l{depth - 1 - level}": value}
    return {"l0": value} if depth >= 1 else value


_DEEP_1000 = Raw('{"a":' * 1000 + "1" + "}" * 1000)
_DEEP_1100 = Raw('{"a":' * 1100 + "1" + "}" * 1100)
_DEEP_LISTS = Raw('{"a":' + "[" * 999 + "]" * 999 + "}")
_WIDE_10K = Raw("{" + ",".join(f'"k{i}":{i}' for i in range(10_000)) + "}")
_EIGHT_KIB = {f"s{i}": "y" * 1000 for i in range(8)}  # compact JSON: 8,065 bytes
_NINE_KIB = {f"s{i}": "y" * 1000 for i in range(9)}
_EXACTLY_8_KIB = {f"s{i}": "y" * (1016 if i < 7 else 1015) for i in range(8)}  # compact JSON: 8,192 bytes
_8_KIB_AND_1 = {f"s{i}": "y" * 1016 for i in range(8)}  # 8,193 bytes
_EMOJI_12K = {f"e{i}": "😀" * 1000 for i in range(3)}  # 3,000 characters, 12,000 bytes of UTF-8

_PARAMS_FIXED: tuple[Any, ...] = (
    {},
    {"preview": True},
    {"preview": "yes"},
    {"regime": "auto"},
    {"regime": "bear"},
    {"regime": ""},
    {"targets": {"FZA": 0.5, "FZB": 0.25}},
    {"targets": {"FZA": -1}},
    {"targets": {}},
    _nested(4),
    _nested(5),
    {"a": [[[1]]]},
    {"a": [[[[1]]]]},
    {"a": [[[{}]]]},
    {"a": [[[[]]]]},
    {f"k{i}": i for i in range(64)},
    {f"k{i}": i for i in range(65)},
    {"t": {f"k{i}": i for i in range(63)}},
    {"t": {f"k{i}": i for i in range(64)}},
    {"t": list(range(63))},
    {"t": list(range(64))},
    {"s": "y" * 1024},
    {"s": "y" * 1025},
    {"y" * 1024: 1},
    {"y" * 1025: 1},
    {"s": _LONG},
    _EIGHT_KIB,
    _EXACTLY_8_KIB,
    _8_KIB_AND_1,
    _NINE_KIB,
    _EMOJI_12K,
    {"n": 1e308, "m": -1e308, "t": 5e-324, "z": -0.0},
    {"n": 2**53, "m": -(2**53)},
    {"n": 2**64},
    {"n": 2**53 + 1},
    {"nan": "NaN", "inf": "Infinity"},
    {"\u0000": "\u0000", "\u200f": "😀", "": None},
)
_PARAMS_BAD_RAW = (
    _DEEP_1000,
    _DEEP_1100,
    _DEEP_LISTS,
    _WIDE_10K,
    Raw('{"x":NaN}'),
    Raw('{"x":Infinity}'),
    Raw('{"x":-Infinity}'),
    Raw('{"x":1e400}'),
    Raw('{"x":"\\ud800"}'),
    Raw('{"x":1,}'),
)
_PARAMS_WRONG: tuple[Any, ...] = ([], [{"preview": True}], "preview", 1, True, None)


def _params_gen(token: Any) -> Gen:
    try:
        parsed = orjson.loads(render(token))
    except orjson.JSONDecodeError:
        return Gen(token, NOT_JSON, "bad")
    if params_problem(parsed) is not None:
        return Gen(token, parsed, "bad")
    return Gen(token, parsed, "unsure" if _params_unsure(parsed) else "ok")


def _params_unsure(params: Any) -> bool:
    """Within the limits by the measures above, but not by every reasonable measure of them."""
    if len(json.dumps(params, separators=(",", ":"))) > PARAMS_MAX_BYTES:  # \\u escapes
        return True
    stack = [params]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
            if any(len(k.encode()) > PARAMS_MAX_TEXT for k in node):
                return True
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            if len(node.encode()) > PARAMS_MAX_TEXT:
                return True
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > 2**53:
            return True  # beyond the doubles' exact integers: a limit may refuse it
    return False


_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
_JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=24,
)


def fixed_params() -> list[Gen]:
    """Params at and beyond each limit: depth, entries, string length, size; 1000 deep, 10k wide."""
    return [
        *(_params_gen(p) for p in _PARAMS_FIXED),
        *(Gen(raw, NOT_JSON, "bad") for raw in _PARAMS_BAD_RAW),
        *(Gen(v, v, "bad") for v in _PARAMS_WRONG),
    ]


def params_values() -> st.SearchStrategy[Gen]:
    return st.one_of(
        st.sampled_from(fixed_params()),
        st.dictionaries(st.text(max_size=8), _JSON_VALUES, max_size=6).map(_params_gen),
        st.dictionaries(st.text(max_size=3), _JSON_VALUES, min_size=50, max_size=70).map(_params_gen),
    )


def fixed_signatures() -> list[Gen]:
    fixed: list[tuple[Any, Verdict]] = [
        ("a" * 64, "ok"),
        ("F" * 128, "ok"),
        ("f" * 129, "bad"),
        ("zz", "bad"),
        ("0x" + "a" * 64, "bad"),
        ("g" * 64, "bad"),
        ("a" * 100_000, "bad"),
        ("ab\u0000", "bad"),
        ("", "unsure"),
        (" ab ", "unsure"),
        (12, "bad"),
        (True, "bad"),
        ([], "bad"),
    ]
    return [Gen(token, token, verdict) for token, verdict in fixed]


def signature_values() -> st.SearchStrategy[Gen]:
    hexes = st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=140)
    return st.one_of(
        st.sampled_from(fixed_signatures()),
        hexes.map(lambda s: Gen(s, s, "ok" if len(s) <= 128 else "bad")),
    )


# ------------------------------------------------------------------------------------ per field kind
def edge_values(spec: FieldSpec, span: Collection[int] | None = None) -> st.SearchStrategy[Gen]:
    """Adversarial values of one field, each with its verdict."""
    kind = spec.kind
    if kind == "time":
        return time_values(span)
    if kind in NUMBER_BOUNDS:
        return number_values(kind)
    if kind in NAME_PATTERNS:
        return name_values(kind)
    if kind in ENUMS:
        return st.sampled_from(fixed_enums(kind))
    if kind == "params":
        return params_values()
    return signature_values()


def normal_values(spec: FieldSpec, span: Collection[int] | None = None) -> st.SearchStrategy[Gen]:
    """Ordinary valid values of one field."""
    kind = spec.kind
    if kind == "time":
        return _normal_time(span)
    if kind in NUMBER_BOUNDS:
        return _normal_number(kind)
    if kind in NAME_PATTERNS:
        return _normal_name(kind)
    if kind in ENUMS:
        return st.sampled_from(ENUMS[kind]).map(lambda s: Gen(s, s, "ok"))
    if kind == "params":
        return st.sampled_from(_PARAMS_FIXED[:7]).map(_params_gen)
    return st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda s: Gen(s, s, "ok"))


def fixed_wrong(spec: FieldSpec) -> list[Gen]:
    """Values of the wrong JSON type for a field (null only where the field is not nullable)."""
    wrong: list[Any] = [v for v in _WRONG_TYPES if spec.kind != "params" or not isinstance(v, dict | Raw)]
    if spec.kind in NUMBER_BOUNDS:
        wrong += ["1", "1.5", "NaN", _LONG]
    elif spec.kind in ("time", "params"):
        wrong += [[0], 1.5]
    else:
        wrong += [1, 1.5, 2**64]
    if not spec.nullable:
        wrong.append(None)
    return [Gen(v, v, "bad") for v in wrong]


def wrong_values(spec: FieldSpec) -> st.SearchStrategy[Gen]:
    return st.sampled_from(fixed_wrong(spec))


def fixed_edges(spec: FieldSpec, span: Collection[int] | None = None) -> list[Gen]:
    """Every fixed adversarial value of one field, each with its verdict (the sweep of `edge_cases`)."""
    kind = spec.kind
    if kind == "time":
        fixed = fixed_times(span)
    elif kind in NUMBER_BOUNDS:
        fixed = fixed_numbers(kind)
    elif kind in NAME_PATTERNS:
        fixed = fixed_names(kind)
    elif kind in ENUMS:
        fixed = fixed_enums(kind)
    elif kind == "params":
        fixed = fixed_params()
    else:
        fixed = fixed_signatures()
    return [*fixed, *fixed_wrong(spec), Gen(None, None, "ok" if spec.nullable else "bad")]


# ---------------------------------------------------------------------------------------- values
Pairs = list[tuple[str, Gen]]


def _spec(topic: str, name: str) -> FieldSpec:
    return next(s for s in FIELDS[topic] if s.name == name)


@st.composite
def valid_pairs(draw: st.DrawFn, topic: str, times: Collection[int] | None = None) -> Pairs:
    """The fields of a valid value of `topic`, in a drawn order, optional fields sometimes left out.

    `times`: the epoch-ms times its time fields are drawn from (ordinary recent times by default).
    """
    pairs: Pairs = []
    if topic == "bars":
        prices = sorted(draw(st.lists(_normal_number("price"), min_size=4, max_size=4)), key=lambda g: g.parsed)
        low, a, b, high = prices
        opening, closing = (a, b) if draw(st.booleans()) else (b, a)
        pairs = [("open", opening), ("high", high), ("low", low), ("close", closing)]
    elif topic == "signals":
        target = draw(st.sampled_from(TARGETS))
        pairs = [(target, draw(normal_values(_spec(topic, target))))]
    elif topic == "control":
        command = draw(st.sampled_from(ENUMS["command"]))
        pairs = [("command", Gen(command, command, "ok"))]
        params = {"REBALANCE": {"preview": True}, "SET_REGIME": {"regime": "auto"}}.get(command)
        if params is not None:
            pairs.append(("params", Gen(params, params, "ok")))
        ts = draw(_normal_time(times))
        expires = TS_END_MS - 1 if draw(st.booleans()) else ts.parsed + 3_600_000
        pairs += [("ts", ts), ("expires_at", Gen(expires, expires, "ok"))]
    given = {name for name, _ in pairs}
    for spec in FIELDS[topic]:
        if spec.name in given or spec.name in TARGETS or spec.name in ("params", "signature"):
            continue
        if spec.required or draw(st.booleans()):
            pairs.append((spec.name, draw(normal_values(spec, times if spec.kind == "time" else None))))
    return draw(st.permutations(pairs))


def _set(pairs: Pairs, name: str, gen: Gen) -> Pairs:
    out = [(n, g) for n, g in pairs if n != name]
    index = next((i for i, (n, _) in enumerate(pairs) if n == name), len(out))
    out.insert(min(index, len(out)), (name, gen))
    return out


_EXTRA_NAMES = ("extra", "Account", "TS", "ts ", " ts", "", "\u0000", "__proto__", "constructor", "topic", "value")
_MUTATIONS = ("edge", "edge", "edge", "wrong", "null", "missing", "extra", "duplicate")
_TOPIC_MUTATIONS = {"bars": ("ohlc",), "signals": ("targets",)}


@st.composite
def mutate(draw: st.DrawFn, topic: str, pairs: Pairs, span: Collection[int] | None = None) -> tuple[Pairs, str]:
    """One mutation of a value's fields, and a label saying what it did."""
    kind = draw(st.sampled_from(_MUTATIONS + _TOPIC_MUTATIONS.get(topic, ())))
    spec = draw(st.sampled_from(FIELDS[topic]))
    fspan = span if spec.kind == "time" else None
    if kind == "edge":
        gen = draw(edge_values(spec, fspan))
        return _set(pairs, spec.name, gen), f"{spec.name}={_short(gen.token, 40)}"
    if kind == "wrong":
        gen = draw(wrong_values(spec))
        return _set(pairs, spec.name, gen), f"{spec.name}={_short(gen.token, 40)} (wrong type)"
    if kind == "null":
        return _set(pairs, spec.name, Gen(None, None, "ok" if spec.nullable else "bad")), f"{spec.name}=null"
    if kind == "missing":
        return [(n, g) for n, g in pairs if n != spec.name], f"no {spec.name}"
    if kind == "extra":
        name = draw(st.sampled_from(_EXTRA_NAMES))
        value = draw(st.one_of(_JSON_LEAVES, st.sampled_from([_LONG, Raw("NaN"), _DEEP_1000])))
        index = draw(st.integers(min_value=0, max_value=len(pairs)))
        return [*pairs[:index], (name, Gen(value, value, "bad")), *pairs[index:]], f"extra {name!r}"
    if kind == "duplicate":
        gen = draw(st.one_of(normal_values(spec, fspan), edge_values(spec, fspan)))
        index = draw(st.integers(min_value=0, max_value=len(pairs)))
        return [*pairs[:index], (spec.name, gen), *pairs[index:]], f"duplicate {spec.name}={_short(gen.token, 40)}"
    if kind == "ohlc":
        present = [(n, g) for n, g in pairs if n in OHLC]
        shuffled = draw(st.permutations([g for _, g in present]))
        moved = dict(zip([n for n, _ in present], shuffled, strict=True))
        return [(n, moved.get(n, g)) if n in moved else (n, g) for n, g in pairs], "OHLC shuffled"
    chosen = draw(st.sets(st.sampled_from(TARGETS), max_size=3))
    out = [(n, g) for n, g in pairs if n not in TARGETS]
    for name in sorted(chosen):
        out.append((name, draw(normal_values(_spec(topic, name)))))
    return out, f"targets {sorted(chosen)}"


def judge(topic: str, pairs: Pairs) -> Expect:
    """What the limits require of a value with these fields."""
    specs = {s.name: s for s in FIELDS[topic]}
    counts = Counter(name for name, _ in pairs)
    last = dict(pairs)
    reject = any(name not in specs for name in counts)
    reject |= any(s.required and s.name not in last for s in specs.values())
    unsure = False
    for name, count in counts.items():
        verdicts = {g.verdict for n, g in pairs if n == name}
        if count > 1:  # which of them counts (or whether the message is refused) is not a limit
            reject |= verdicts == {"bad"}
            unsure = True
        else:
            reject |= "bad" in verdicts
            unsure |= "unsure" in verdicts
    if reject:
        return "reject"
    cross = _cross_fields(topic, pairs, last, counts)
    if cross == "bad":
        return "reject"
    return "any" if unsure or cross == "unsure" else "accept"


def _cross_fields(topic: str, pairs: Pairs, last: dict[str, Gen], counts: Counter[str]) -> Verdict:
    if topic == "bars":
        if any(counts[n] > 1 or last[n].verdict != "ok" for n in OHLC):
            return "unsure"
        o, h, lo, c = (last[n].parsed for n in OHLC)
        return "ok" if lo <= min(o, c) <= max(o, c) <= h else "bad"
    if topic == "signals":
        if any(counts[n] > 1 or (n in last and last[n].verdict != "ok") for n in TARGETS):
            return "unsure"
        given = [n for n in TARGETS if n in last and last[n].parsed is not None]
        return "ok" if len(given) == 1 else "bad"
    return "ok"


def _signed(pairs: Pairs, key: bytes) -> Pairs | None:
    """The pairs with a valid signature over the value as a parser reads it (None: cannot or must not)."""
    unsigned = [(n, g) for n, g in pairs if n != "signature"]
    try:
        value = orjson.loads(render(Obj(tuple((n, g.token) for n, g in unsigned))))
    except orjson.JSONDecodeError:
        return None
    account = value.get("account") if isinstance(value, dict) else None
    if not isinstance(account, str) or "FZ" not in account:
        return None  # never a valid signature on `*`: that would act on every account
    try:
        signature = sign(value, key)
    except (RecursionError, ValueError):
        return None
    return [*unsigned, ("signature", Gen(signature, signature, "ok"))]


# ------------------------------------------------------------------------------------------- lines
@dataclass(frozen=True)
class Case:
    """One adversarial tape line, what the limits require of it and how it was made."""

    topic: str
    raw: bytes = field(repr=False)
    expect: Expect
    why: str
    swept: str | None = None  # the field `edge_cases` swept, if it made the line

    def __repr__(self) -> str:
        raw = repr(self.raw)
        if len(self.raw) > 600:  # 1 MiB lines: their ends and size only
            raw = f"{self.raw[:300]!r} + <{len(self.raw) - 600} bytes> + {self.raw[-300:]!r}"
        return f"Case(topic={self.topic!r}, expect={self.expect!r}, why={self.why!r}, raw={raw})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis' failure report
        printer.text(repr(self))


def envelope(topic: Any, key: Any, value: Any, extra: Sequence[tuple[str, Any]] = ()) -> bytes:
    return render(Obj((("topic", topic), ("key", key), ("value", value), *extra))).encode("utf-8")


def _key_of(topic: str, pairs: Pairs) -> Any:
    name = "symbol" if topic == "bars" else "account"
    token = dict(pairs).get(name)
    return token.token if token is not None and isinstance(token.token, str) else None


@st.composite
def _padded(draw: st.DrawFn, raw: bytes) -> tuple[bytes, str] | None:
    """The line padded with JSON whitespace inside the envelope to exactly 1 MiB or 1 MiB + 1 byte."""
    size = draw(st.sampled_from((MESSAGE_MAX_BYTES, MESSAGE_MAX_BYTES + 1)))
    if len(raw) >= size or not raw.startswith(b"{"):
        return None
    return b"{" + b" " * (size - len(raw)) + raw[1:], f"padded to {size} bytes"


@st.composite
def _input_case(draw: st.DrawFn, topic: str, bar_times: Collection[int] | None, signing_key: bytes | None) -> Case:
    span = bar_times if topic == "bars" else None
    pairs = draw(valid_pairs(topic, bar_times))
    labels: list[str] = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        pairs, label = draw(mutate(topic, pairs, span))
        labels.append(label)
    if topic == "control" and signing_key is not None and draw(st.booleans()):
        signed = _signed(pairs, signing_key)
        if signed is not None:
            pairs = signed
            labels.append("signed")
    expect = judge(topic, pairs)
    key = draw(st.sampled_from([_key_of(topic, pairs), None, "FZ9"]))
    raw = envelope(topic, key, Obj(tuple((n, g.token) for n, g in pairs)))
    if draw(st.integers(min_value=0, max_value=15)) == 0:
        padded = draw(_padded(raw))
        if padded is not None:
            raw, label = padded
            labels.append(label)
    if len(raw) > MESSAGE_MAX_BYTES:
        expect = "reject"
    return Case(topic, raw, expect, "; ".join(labels) or "valid")


_ENVELOPE_MUTATIONS = (
    "topic_wrong_type",
    "topic_unknown",
    "topic_missing",
    "value_missing",
    "key_missing",
    "key_wrong_type",
    "key_odd",
    "value_wrong_type",
    "extra_field",
    "duplicate_topic",
    "duplicate_value",
    "not_an_object",
    "truncated",
    "trailing_garbage",
    "trailing_whitespace",
    "bom",
    "invalid_utf8",
    "raw_control_character",
    "too_deep",
    "oversized",
    "padded",
    "blank",
)
_UNKNOWN_TOPICS = (
    "Bars",
    "BARS",
    "bars ",
    " bars",
    "bar",
    "market.bars",
    "decisions",
    "halts",
    "events",
    "deadletter",
    "rebalance_runs",
    "",
    "\u0000",
    "bars\u0000",
    "bars\u200f",
    "__class__",
    "weather",
    _LONG,
)


@st.composite
def _envelope_case(draw: st.DrawFn, bar_times: Collection[int] | None, signing_key: bytes | None) -> Case:
    topic = draw(st.sampled_from(INPUT_TOPICS))
    pairs = draw(valid_pairs(topic, bar_times))
    if topic == "control" and signing_key is not None:
        pairs = _signed(pairs, signing_key) or pairs
    value = Obj(tuple((n, g.token) for n, g in pairs))
    key = _key_of(topic, pairs)
    good = envelope(topic, key, value)
    mutation = draw(st.sampled_from(_ENVELOPE_MUTATIONS))
    verdict: Verdict = "bad"
    raw = good
    if mutation == "topic_wrong_type":
        raw = envelope(draw(st.sampled_from([1, None, True, [topic], {"t": topic}, 1.5])), key, value)
    elif mutation == "topic_unknown":
        raw = envelope(draw(st.sampled_from(_UNKNOWN_TOPICS)), key, value)
    elif mutation == "topic_missing":
        raw = render(Obj((("key", key), ("value", value)))).encode()
    elif mutation == "value_missing":
        raw = render(Obj((("topic", topic), ("key", key)))).encode()
    elif mutation == "key_missing":
        raw, verdict = render(Obj((("topic", topic), ("value", value)))).encode(), "unsure"
    elif mutation == "key_wrong_type":
        raw = envelope(topic, draw(st.sampled_from([1, True, 1.5, [], {}, 2**64, Raw("NaN")])), value)
    elif mutation == "key_odd":
        odd = draw(st.sampled_from(["", "\u0000", _LONG, "A1", "*", "FZ\u200f", Raw('"\\ud800"')]))
        raw, verdict = envelope(topic, odd, value), "bad" if isinstance(odd, Raw) else "unsure"
    elif mutation == "value_wrong_type":
        wrong = draw(st.sampled_from([None, [], "text", 1, True, render(value), [value]]))
        raw = envelope(topic, key, wrong)
    elif mutation == "extra_field":
        extra = draw(st.sampled_from([("partition", 0), ("offset", 5), ("headers", {}), ("Topic", "weather")]))
        raw, verdict = envelope(topic, key, value, [extra]), "unsure"
    elif mutation == "duplicate_topic":
        other = draw(st.sampled_from(["weather", *INPUT_TOPICS]))
        first, second = (other, topic) if draw(st.booleans()) else (topic, other)
        raw = render(Obj((("topic", first), ("key", key), ("value", value), ("topic", second)))).encode()
        verdict = "unsure"
    elif mutation == "duplicate_value":
        other = draw(st.sampled_from([{}, None, {"account": "FZ1"}]))
        first, second = (other, value) if draw(st.booleans()) else (value, other)
        raw = render(Obj((("topic", topic), ("key", key), ("value", first), ("value", second)))).encode()
        verdict = "unsure"
    elif mutation == "not_an_object":
        raw = draw(
            st.sampled_from(
                [
                    render([topic, key, value]).encode(),
                    _string(good.decode()).encode(),
                    b"1",
                    b"null",
                    b"true",
                    b"{}",
                    b'""',
                    b"[]",
                ]
            )
        )
    elif mutation == "truncated":
        raw = good[: draw(st.integers(min_value=1, max_value=len(good) - 1))]
    elif mutation == "trailing_garbage":
        raw = good + draw(st.sampled_from([b"x", b"}", b" {}", b"\x00", b",", b"]", good]))
    elif mutation == "trailing_whitespace":
        raw, verdict = good + draw(st.sampled_from([b" ", b"\t", b"\r", b"\x0b", b"\x0c"])), "unsure"
    elif mutation == "bom":
        raw, verdict = b"\xef\xbb\xbf" + good, "unsure"
    elif mutation == "invalid_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]))
        raw = good.replace(b'"FZ', b'"FZ' + bad, 1)
    elif mutation == "raw_control_character":
        char = draw(st.sampled_from([b"\x00", b"\x01", b"\x1f", b"\t"]))
        raw = good.replace(b'"FZ', b'"FZ' + char, 1)
    elif mutation == "too_deep":
        deep = draw(st.sampled_from([1000, 1100, 5000]))
        raw = draw(
            st.sampled_from(
                [
                    envelope(topic, key, Raw("[" * deep + "]" * deep)),
                    b"[" * deep + b"]" * deep,
                    b'{"a":' * deep + good + b"}" * deep,
                ]
            )
        )
    elif mutation == "oversized":
        raw = envelope(topic, key, Obj((*value.pairs, ("pad", _HUGE_PAD))))
    elif mutation == "padded":
        padded = draw(_padded(good))
        assert padded is not None
        raw = padded[0]
        verdict = "ok" if len(raw) <= MESSAGE_MAX_BYTES else "bad"
    else:  # blank
        raw = draw(st.sampled_from([b"", b" ", b"\t \t", b"\r"]))
    expect: Expect = {"ok": "accept", "bad": "reject", "unsure": "any"}[verdict]
    if len(raw) > MESSAGE_MAX_BYTES:
        expect = "reject"
    return Case("envelope", raw, expect, f"{mutation} around a {topic} value")


_SWEEP_BASE: dict[str, tuple[tuple[str, Any], ...]] = {
    "bars": (
        ("symbol", "FZA"),
        ("ts", _T),
        ("open", 10.0),
        ("high", 11.0),
        ("low", 9.0),
        ("close", 10.5),
        ("volume", 1e3),
    ),
    "fills": (
        ("fill_id", "FZ-f"),
        ("account", "FZ1"),
        ("symbol", "FZA"),
        ("side", "BUY"),
        ("qty", 10.0),
        ("price", 10.0),
        ("ts", _T),
        ("fee", 1.0),
        ("decision_id", "FZ-d"),
    ),
    "signals": (
        ("signal_id", "FZ-s"),
        ("account", "FZ1"),
        ("symbol", "FZA"),
        ("ts", _T),
        ("strategy", "FZ-st"),
        ("price", 10.0),
        ("target_notional", 1000.0),
        ("atr", 1.0),
    ),
    "equity": (("account", "FZ1"), ("ts", _T), ("equity", 1e6), ("balance", 1e6), ("cash", 10.0)),
    "control": (
        ("command", "HALT"),
        ("account", "FZ1"),
        ("ts", _T),
        ("issued_by", "FZ-ops"),
        ("nonce", "FZ-n"),
        ("expires_at", TS_END_MS - 1),
        ("params", {}),
    ),
}
_UNIQUE_ID = {"fills": "fill_id", "signals": "signal_id", "control": "nonce"}


def edge_cases(
    topic: str, *, bar_times: Collection[int] | None = None, signing_key: bytes | None = FUZZ_CONTROL_KEY
) -> list[Case]:
    """Every fixed adversarial value in every field of one valid value of an input topic, one line each.

    The deterministic sweep beside the random search: each value the limits name (1e308, 5e-324, 2**64,
    -0.0, NaN spellings, year 10000, unicode digits, 1000-deep params, ...) in each field, every run.
    Ids differ from line to line (a repeated fill, signal or nonce would be ignored, not tested). With
    `bar_times`, every value's time is the middle one of them unless the time is the field swept.
    """
    span = bar_times if topic == "bars" else None
    base = dict(_SWEEP_BASE[topic])
    if bar_times:  # inside the session: after its first signals and fills, at one of its bar times
        base["ts"] = sorted(bar_times)[len(bar_times) // 2]
    cases = []
    for spec in FIELDS[topic]:
        for index, gen in enumerate(fixed_edges(spec, span if spec.kind == "time" else None)):
            pairs: Pairs = [(name, Gen(v, v, "ok")) for name, v in base.items()]
            unique = _UNIQUE_ID.get(topic)
            if unique is not None and unique != spec.name:
                pairs = _set(pairs, unique, Gen(f"FZ-{spec.name}-{index}", f"FZ-{spec.name}-{index}", "ok"))
            pairs = _set(pairs, spec.name, gen)
            label = f"{spec.name}={_short(gen.token, 48)}"
            if topic == "control" and signing_key is not None:
                signed = _signed(pairs, signing_key)
                if signed is not None:
                    pairs, label = signed, f"{label}; signed"
            raw = envelope(topic, _key_of(topic, pairs), Obj(tuple((n, g.token) for n, g in pairs)))
            expect = "reject" if len(raw) > MESSAGE_MAX_BYTES else judge(topic, pairs)
            cases.append(Case(topic, raw, expect, label, spec.name))
    return cases


def adversarial_case(
    topic: str, *, bar_times: Collection[int] | None = None, signing_key: bytes | None = FUZZ_CONTROL_KEY
) -> st.SearchStrategy[Case]:
    """Adversarial lines of one fuzz topic (an input topic, or "envelope") with what the limits require.

    `bar_times`: epoch-ms times every bar that can validate is put at (an existing session's bar
    times), and the ordinary times of the other topics' values; `signing_key`: controls are
    sometimes signed with it, after every other change.
    """
    if topic == "envelope":
        return _envelope_case(bar_times, signing_key)
    if topic not in INPUT_TOPICS:
        raise ValueError(f"unknown fuzz topic {topic!r}")
    return _input_case(topic, bar_times, signing_key)


def adversarial_value(topic: str, **options: Any) -> st.SearchStrategy[bytes]:
    """Raw tape lines (bytes) of one input topic, or of broken envelopes ("envelope")."""
    return adversarial_case(topic, **options).map(lambda case: case.raw)


def adversarial_line(**options: Any) -> st.SearchStrategy[bytes]:
    """Raw tape lines of every input topic and broken envelopes."""
    return st.one_of(*(adversarial_value(topic, **options) for topic in FUZZ_TOPICS))
