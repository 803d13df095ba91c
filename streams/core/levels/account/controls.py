"""Signed operator controls (SPEC §8): HMAC-SHA256 over the canonical JSON, expiry, single-use nonces.

The signature covers the UTF-8 bytes of the value without `signature`, serialised as
`json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`. Checks are split:
`check_signature` needs the raw value as received and the key (the shell does it before parsing);
expiry and nonce reuse are judged in event time by Level 1 (`ControlGate`), and so are the command's
parameters (`params_problem`: a REBALANCE or SET_REGIME that cannot be acted on is a bad control).
Everything fails closed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any


def canonical_bytes(value: Mapping[str, Any]) -> bytes:
    """The bytes a control's signature covers."""
    unsigned = {k: v for k, v in value.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(value: Mapping[str, Any], key: bytes) -> str:
    """Hex HMAC-SHA256 of a control value (for operators' tools and tests)."""
    return hmac.new(key, canonical_bytes(value), hashlib.sha256).hexdigest()


def check_signature(value: Mapping[str, Any], key: bytes | None, required: bool = True) -> str | None:
    """None when the signature is valid (or not required); else why the control is refused."""
    if not required:
        return None
    if key is None:
        return "no control key configured (RISKGUARD_CONTROL_KEY): controls are refused"
    signature = value.get("signature")
    if not isinstance(signature, str) or not signature:
        return "unsigned control"
    expected = sign(value, key)
    if not hmac.compare_digest(signature.lower(), expected):
        return "forged control: signature does not match"
    return None


def signature_check(key: bytes | None, required: bool = True) -> Callable[[Mapping[str, Any]], str | None]:
    """The signature rule of SPEC §8 with one deployment's key and policy: the one check every shell uses."""
    return partial(check_signature, key=key, required=required)


@dataclass(slots=True)
class ControlGate:
    """Event-time checks of a control: not expired, nonce never seen before."""

    nonces: set[str] = field(default_factory=set)

    def admit(self, nonce: str, ts: int, expires_at: int, clock: int) -> str | None:
        """None when the control may act; else why it is refused. `clock` is the latest event time."""
        if expires_at <= max(ts, clock):
            return "expired control"
        if nonce in self.nonces:
            return "replayed control: nonce already used"
        self.nonces.add(nonce)
        return None


AUTO_REGIME = "auto"


def params_problem(command: str, params: Mapping[str, Any], regimes: Collection[str]) -> str | None:
    """None when a command's `params` can be acted on; else why the control is a bad control.

    SET_REGIME needs `regime`: a configured regime, or `auto` to follow the classifier again.
    REBALANCE takes an optional boolean `preview` and optional `targets` (symbol -> weight >= 0).
    """
    if command == "SET_REGIME":
        regime = params.get("regime")
        if not isinstance(regime, str) or (regime != AUTO_REGIME and regime not in regimes):
            known = ", ".join(sorted([*regimes, AUTO_REGIME]))
            return f"SET_REGIME params.regime must be one of {known}; got {regime!r}"
    elif command == "REBALANCE":
        if not isinstance(params.get("preview", False), bool):
            return "REBALANCE params.preview must be true or false"
        targets = params.get("targets")
        if targets is not None:
            if not isinstance(targets, Mapping) or not targets:
                return "REBALANCE params.targets must be a non-empty mapping of symbol to weight"
            for symbol, weight in targets.items():
                number = isinstance(weight, int | float) and not isinstance(weight, bool)
                if not number or not math.isfinite(weight) or weight < 0:
                    return f"REBALANCE params.targets[{symbol!r}] must be a finite weight >= 0; got {weight!r}"
    return None
