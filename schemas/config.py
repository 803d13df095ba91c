"""Configuration of SPEC §5: one YAML file, validated once into frozen models.

Seed 001's complete YAML loads unchanged; the additions of SPEC §5 sit beside its keys. Per-account
risk is resolved as: the file's `risk` <- the account's `profile` <- the account's own `risk` keys.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.base import RESERVED_ACCOUNTS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def parse_duration_ms(value: object) -> int:
    """Parse '30m', '5m', '1h', '90s', '1d', '250ms' or a number of seconds into milliseconds."""
    if isinstance(value, bool):
        raise ValueError("duration must be like '30m', '1h', '90s' or a number of seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("duration must not be negative")
        return round(value * 1000)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return round(float(match.group(1)) * _UNIT_MS[match.group(2)])
    raise ValueError(f"duration must be like '30m', '1h', '90s' or a number of seconds, got {value!r}")


DurationMs = Annotated[int, BeforeValidator(parse_duration_ms)]
Fraction = Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)]
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA timezone {value!r}") from exc
    return value


def _hh_mm(name: str, value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(f"{name} must be HH:MM (24h), got {value!r}")
    return value


class Frozen(BaseModel):
    """Frozen, strict-keyed configuration block."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DailyLoss(Frozen):
    limit_pct: Fraction = 0.05
    of: Literal["day_start", "initial"] = "day_start"
    basis: Literal["equity", "balance", "max"] = "equity"


class IntradayDrawdown(Frozen):
    warn_pct: Fraction = 0.05
    halt_pct: Fraction = 0.10

    @model_validator(mode="after")
    def _warn_below_halt(self) -> IntradayDrawdown:
        if self.warn_pct > self.halt_pct:
            raise ValueError("warn_pct must not exceed halt_pct")
        return self


class TrailingDrawdown(Frozen):
    pct: Fraction = 0.06
    mode: Literal["intraday", "end_of_day"] = "intraday"
    lock_at_initial: bool = True


class EntryQuota(Frozen):
    """SPEC §6.1 entry quota: the risk-increasing part of the day's trades, by notional, VaR or margin."""

    measure: Literal["notional", "var", "margin"] = "notional"
    pct: Fraction
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.99


class MarginRates(Frozen):
    """Initial margin rate per symbol (`measure: margin`), `default` for the others."""

    default: Annotated[float, Field(ge=0, le=1)] = 0.25
    overrides: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)

    def rate_for(self, symbol: str) -> float:
        return self.overrides.get(symbol, self.default)


class BuyingPower(Frozen):
    """Seed 003's "verify buying power": a buy's opening part fits in cash × multiplier less pending buys."""

    multiplier: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 1.0


class AccountRules(Frozen):
    """Level 1: trading day, loss limits, drawdowns, entry quota, buying power."""

    timezone: str = "UTC"
    reset_time: str = "00:00"
    initial_balance: Money | None = None
    daily_loss: DailyLoss | None = DailyLoss()
    max_total_loss_pct: Fraction | None = 0.10
    intraday_drawdown: IntradayDrawdown | None = IntradayDrawdown()
    trailing_drawdown: TrailingDrawdown | None = None
    daily_entry_quota_pct: Fraction | None = None
    daily_entry_quota: EntryQuota | None = None
    margin_rates: MarginRates = MarginRates()
    buying_power: BuyingPower | None = None
    on_warning: Literal["warn", "reduce"] = "warn"

    _zone = field_validator("timezone")(classmethod(lambda cls, value: _known_zone(value)))
    _reset_time = field_validator("reset_time")(classmethod(lambda cls, value: _hh_mm("reset_time", value)))

    @model_validator(mode="after")
    def _one_quota(self) -> AccountRules:
        if self.daily_entry_quota_pct is not None and self.daily_entry_quota is not None:
            raise ValueError("daily_entry_quota_pct is the shorthand of daily_entry_quota: set one of them")
        return self

    @property
    def reset_minutes(self) -> int:
        hours, minutes = self.reset_time.split(":")
        return int(hours) * 60 + int(minutes)

    @property
    def entry_quota(self) -> EntryQuota | None:
        """The day's entry quota; `daily_entry_quota_pct` is `{measure: notional, pct: ...}`."""
        if self.daily_entry_quota_pct is not None:
            return EntryQuota(measure="notional", pct=self.daily_entry_quota_pct)
        return self.daily_entry_quota


class ClusterRules(Frozen):
    """Level 2: rolling correlation clusters and their exposure cap."""

    window: int = Field(30, ge=2)
    min_periods: int = Field(20, ge=2)
    threshold: float = Field(0.7, gt=0, le=1)
    method: Literal["components", "average", "complete"] = "components"
    demean_market: bool = False
    static: dict[str, list[str]] = Field(default_factory=dict)
    cap_pct: Fraction | None = 0.25

    @model_validator(mode="after")
    def _periods_fit_window(self) -> ClusterRules:
        if self.min_periods > self.window:
            raise ValueError("min_periods must not exceed window")
        return self


class FactorRules(Frozen):
    """Level 2 beta to a benchmark (seed 000 "Factor Neutrality"); the cap is per account."""

    benchmark: str | None = None
    beta_window: int = Field(60, ge=2)
    min_periods: int = Field(20, ge=2)
    max_abs_beta_pct: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _periods_fit_window(self) -> FactorRules:
        if self.min_periods > self.beta_window:
            raise ValueError("min_periods must not exceed beta_window")
        return self


class StopLevels(Frozen):
    stop_loss_pct: Annotated[float, Field(gt=0, lt=1)] | None = None
    take_profit_pct: Annotated[float, Field(gt=0)] | None = None
    trailing_pct: Annotated[float, Field(gt=0, lt=1)] | None = None


class StopRules(Frozen):
    default: StopLevels = StopLevels()
    overrides: dict[str, StopLevels] = Field(default_factory=dict)
    reentry: Literal["until_rebalance", "cooldown", "allow"] = "until_rebalance"
    cooldown_bars: int = Field(0, ge=0)

    def for_symbol(self, symbol: str) -> StopLevels:
        return self.overrides.get(symbol, self.default)


class SizingRules(Frozen):
    method: Literal["target", "fixed_dollar", "fixed_percent", "volatility_adjusted", "kelly"] = "target"
    fixed_dollar: Money = 10_000
    fixed_percent: Fraction = 0.10
    risk_per_trade_pct: Fraction = 0.01
    atr_period: int = Field(14, ge=1)
    atr_multiplier: float = Field(2.0, gt=0)
    kelly_fraction: Fraction = 0.5
    kelly_min_trades: int = Field(20, ge=1)


class Concentration(Frozen):
    position: tuple[Fraction, Fraction] = (0.20, 0.30)
    group: tuple[Fraction, Fraction] = (0.40, 0.60)
    cluster: tuple[Fraction, Fraction] = (0.30, 0.50)


class PerTrade(Frozen):
    """Seed 001 per-trade level."""

    max_notional: Money | None = None
    lot_size: float = Field(1, gt=0)
    min_order_notional: Money = 0


class PerSymbol(Frozen):
    """Seed 001 per-symbol level plus SPEC §5 additions."""

    default_cap: Money | None = None
    overrides: dict[str, Money] = Field(default_factory=dict)
    band_pct: Fraction = 0.05
    rebalance_cadence: DurationMs = 30 * 60_000
    rebalance_to: Literal["edge", "target"] = "edge"
    max_weight_pct: Fraction | None = None

    def cap_for(self, symbol: str) -> float | None:
        return self.overrides.get(symbol, self.default_cap)


class Groups(Frozen):
    type: str = "sector"
    cap_by_group: dict[str, Money] = Field(default_factory=dict)
    symbol_groups: dict[str, str] = Field(default_factory=dict)

    def group_of(self, symbol: str) -> str:
        return self.symbol_groups.get(symbol, "Default")

    def cap_for(self, group: str) -> float | None:
        return self.cap_by_group.get(group, self.cap_by_group.get("Default"))


class VolTarget(Frozen):
    enabled: bool = False
    target_daily_vol: Annotated[float, Field(gt=0)] = 0.01
    lookback: int = Field(20, ge=2)
    min_scale: Annotated[float, Field(ge=0)] = 0.25
    max_scale: Annotated[float, Field(gt=0)] = 1.0

    @model_validator(mode="after")
    def _scale_order(self) -> VolTarget:
        if self.min_scale > self.max_scale:
            raise ValueError("min_scale must not exceed max_scale")
        return self


class Portfolio(Frozen):
    gross_cap: Money | None = None
    net_cap: Money | None = None
    vol_target: VolTarget = VolTarget()


class RiskConfig(Frozen):
    """Every guard level's limits for one account."""

    account: AccountRules = AccountRules()
    clusters: ClusterRules = ClusterRules()
    factor: FactorRules = FactorRules()
    stops: StopRules = StopRules()
    sizing: SizingRules = SizingRules()
    concentration: Concentration = Concentration()
    per_trade: PerTrade = PerTrade()
    per_symbol: PerSymbol = PerSymbol()
    groups: Groups = Groups()
    portfolio: Portfolio = Portfolio()
    pending_ttl: DurationMs = 5 * 60_000


class RebalanceTriggers(Frozen):
    on_signal_change: bool = True
    on_cadence_tick: bool = True
    on_threshold_breach: bool = True
    signal_change_threshold: Fraction = 0.05


class Policy(Frozen):
    rebalance_triggers: RebalanceTriggers = RebalanceTriggers()


_WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TRADING_DAY_RULES = ("first_trading_day", "last_trading_day")


class TodayBias(Frozen):
    """Seed 004 §5.3: the share of holdings up today tilts sells (high) or buys (low)."""

    high_pct: Annotated[float, Field(ge=0, le=1)] = 0.7
    low_pct: Annotated[float, Field(ge=0, le=1)] = 0.3
    boost_pct: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 0.1

    @model_validator(mode="after")
    def _low_below_high(self) -> TodayBias:
        if self.low_pct >= self.high_pct:
            raise ValueError("low_pct must be below high_pct")
        return self


class RebalancePolicy(Frozen):
    """Seed 004 §12 defaults and §8 schedule (see docs/rebalance.md)."""

    enabled: bool = False
    frequency: Literal["weekly", "monthly", "quarterly", "custom_days"] = "monthly"
    every_days: int = Field(30, ge=1)
    day_rule: str | None = None
    time_local: str = "15:10"
    timezone: str = "UTC"
    roll: Literal["next", "previous"] = "next"
    holidays: list[str] = Field(default_factory=list)
    start_date: date | None = None
    budget_pct: Fraction = 0.10
    drift_band_abs_pct: Fraction = 0.02
    drift_band_rel_pct: Fraction = 0.15
    max_trades: int = Field(10, ge=1)
    min_trade_value: Money = 2000
    max_position_weight: Fraction = 0.15
    tilt_mode: Literal["neutral", "mean_reversion", "momentum"] = "neutral"
    tilt_strength: Annotated[float, Field(ge=0, le=1)] = 0.5
    profit_take_threshold_pct: Annotated[float, Field(ge=-1, le=100, allow_inf_nan=False)] | None = None
    profit_take_boost_pct: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 0.20
    today_bias: TodayBias | None = None
    no_buy: list[str] = Field(default_factory=list)
    no_sell: list[str] = Field(default_factory=list)
    targets: dict[str, float] = Field(default_factory=dict)

    _zone = field_validator("timezone")(classmethod(lambda cls, value: _known_zone(value)))
    _time_local = field_validator("time_local")(classmethod(lambda cls, value: _hh_mm("time_local", value)))

    @field_validator("holidays")
    @classmethod
    def _iso_dates(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                date.fromisoformat(text)
            except ValueError:
                raise ValueError(f"holidays must be ISO dates (YYYY-MM-DD), got {text!r}") from None
        return value

    @field_validator("targets")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        for symbol, weight in value.items():
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"target weight of {symbol!r} must be finite and >= 0, got {weight!r}")
        return value

    @model_validator(mode="after")
    def _day_rule_fits(self) -> RebalancePolicy:
        rule = (self.day_rule or "").strip().lower()
        if not rule or (rule in _TRADING_DAY_RULES and self.frequency != "custom_days"):
            return self
        if self.frequency == "custom_days":
            try:
                date.fromisoformat(rule)
            except ValueError:
                raise ValueError(f"day_rule for custom_days must be an ISO start date, got {self.day_rule!r}") from None
        elif self.frequency == "weekly":
            if not any(rule in (name, name[:3]) for name in _WEEKDAY_NAMES):
                raise ValueError(
                    f"day_rule for weekly must be a weekday or first/last_trading_day, got {self.day_rule!r}"
                )
        elif not (rule.isdigit() and 1 <= int(rule) <= 31):
            raise ValueError(f"day_rule must be a day 1-31 or first/last_trading_day, got {self.day_rule!r}")
        return self


class Regime(Frozen):
    equity_allocation: Fraction
    leverage_limit: Annotated[float, Field(ge=0)]
    vol_target: Annotated[float, Field(gt=0)]
    # The regime's own cap on |beta exposure| / equity (SPEC §6.2); None keeps the account's.
    max_abs_beta_pct: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None


def _default_regimes() -> dict[str, Regime]:
    return {
        "bull": Regime(equity_allocation=0.8, leverage_limit=1.5, vol_target=0.15),
        "bear": Regime(equity_allocation=0.4, leverage_limit=0.5, vol_target=0.08),
        "crisis": Regime(equity_allocation=0.2, leverage_limit=0.2, vol_target=0.05),
    }


class BudgetTriggers(Frozen):
    drift_threshold: Fraction = 0.1
    regime_change: bool = True
    correlation_spike: Fraction = 0.8
    vol_breach: Annotated[float, Field(gt=0)] = 1.5


class RegimeClassifier(Frozen):
    """The built-in regime classifier on `budget.benchmark` bars (see docs/budget.md)."""

    window: int = Field(20, ge=2)
    min_periods: int = Field(10, ge=2)
    periods_per_year: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 252
    bear_vol: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.20
    bear_drawdown: Annotated[float, Field(gt=0, le=1)] = 0.05
    crisis_vol: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.35
    crisis_drawdown: Annotated[float, Field(gt=0, le=1)] = 0.10

    @model_validator(mode="after")
    def _ordered(self) -> RegimeClassifier:
        if self.min_periods > self.window:
            raise ValueError("min_periods must not exceed window")
        if self.bear_vol > self.crisis_vol or self.bear_drawdown > self.crisis_drawdown:
            raise ValueError("bear thresholds must not exceed crisis thresholds")
        return self


CLASSIFIER_REGIMES = ("bull", "bear", "crisis")


class Budget(Frozen):
    """Seed 002 dynamic risk budget (see docs/budget.md)."""

    enabled: bool = False
    # Seed 002's polling period, accepted so its YAML loads: triggers run on every relevant event instead.
    monitoring_interval: DurationMs | None = None
    benchmark: str | None = None
    initial_regime: str = "bull"
    auto_rebalance: bool = False
    regime_allocations: dict[str, Regime] = Field(default_factory=_default_regimes)
    rebalancing_triggers: BudgetTriggers = BudgetTriggers()
    classifier: RegimeClassifier = RegimeClassifier()
    vol_window: int = Field(20, ge=2)
    vol_min_periods: int = Field(5, ge=2)

    @model_validator(mode="after")
    def _regimes_known(self) -> Budget:
        known = sorted(self.regime_allocations)
        if self.initial_regime not in self.regime_allocations:
            raise ValueError(f"initial_regime {self.initial_regime!r} is not in regime_allocations ({known})")
        missing = [name for name in CLASSIFIER_REGIMES if name not in self.regime_allocations]
        if self.benchmark is not None and missing:
            raise ValueError(f"the benchmark classifier needs regime_allocations for {missing}")
        if "auto" in self.regime_allocations:
            raise ValueError("'auto' is reserved (SET_REGIME auto returns to the classifier)")
        if self.vol_min_periods > self.vol_window:
            raise ValueError("vol_min_periods must not exceed vol_window")
        return self


class ControlPolicy(Frozen):
    require_signature: bool = True


class AccountOverride(Frozen):
    """Per-account settings: a profile, an initial balance and any risk keys."""

    profile: str | None = None
    initial_balance: Money | None = None
    risk: dict[str, Any] = Field(default_factory=dict)

    @field_validator("risk")
    @classmethod
    def _market_wide_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Level 2 runs once for the whole market from the file's keys: an account may only set its caps.
        for block, allowed in _PER_ACCOUNT_MARKET_KEYS.items():
            keys = value.get(block)
            if isinstance(keys, Mapping):
                refused = sorted(set(keys) - allowed)
                if refused:
                    raise ValueError(
                        f"{block}.{refused[0]} is market-wide (set it in the file's risk.{block}); "
                        f"per account only {', '.join(sorted(allowed))} may differ"
                    )
        return value


_PER_ACCOUNT_MARKET_KEYS = {"clusters": {"cap_pct"}, "factor": {"max_abs_beta_pct"}}


PROFILES: dict[str, dict[str, Any]] = {
    "standard": {
        "account": {
            "daily_loss": {"limit_pct": 0.05, "of": "day_start", "basis": "equity"},
            "max_total_loss_pct": 0.10,
            "intraday_drawdown": None,
            "trailing_drawdown": None,
        }
    },
    "high_leverage": {
        "account": {
            "daily_loss": {"limit_pct": 0.03, "of": "day_start", "basis": "equity"},
            "max_total_loss_pct": 0.06,
            "intraday_drawdown": None,
            "trailing_drawdown": None,
        },
        "per_symbol": {"max_weight_pct": 0.20},
        "clusters": {"cap_pct": 0.40},
    },
    "ftmo": {
        "account": {
            "timezone": "Europe/Prague",
            "reset_time": "00:00",
            "daily_loss": {"limit_pct": 0.05, "of": "initial", "basis": "balance"},
            "max_total_loss_pct": 0.10,
            "intraday_drawdown": None,
            "trailing_drawdown": None,
        }
    },
    "the5ers": {
        "account": {
            "timezone": "America/New_York",
            "reset_time": "17:00",
            "daily_loss": {"limit_pct": 0.05, "of": "day_start", "basis": "max"},
            "max_total_loss_pct": 0.10,
            "intraday_drawdown": None,
            "trailing_drawdown": None,
        }
    },
    "seed003": {
        "account": {
            "daily_loss": None,
            "max_total_loss_pct": None,
            "intraday_drawdown": {"warn_pct": 0.05, "halt_pct": 0.10},
            "trailing_drawdown": None,
        }
    },
    "topstep_like": {
        "account": {
            "timezone": "America/Chicago",
            "reset_time": "17:00",
            "daily_loss": {"limit_pct": 0.02, "of": "initial", "basis": "balance"},
            "max_total_loss_pct": None,
            "intraday_drawdown": None,
            "trailing_drawdown": {"pct": 0.04, "mode": "end_of_day", "lock_at_initial": True},
        }
    },
}


class KafkaSettings(Frozen):
    bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "riskguard"
    topic_prefix: str = ""
    partitions: int = Field(4, ge=1)


class Config(Frozen):
    """The whole riskguard configuration file."""

    version: str | None = None
    mode: Literal["enforce", "shadow"] = "enforce"
    profile: str | None = None
    risk: RiskConfig = RiskConfig()
    policy: Policy = Policy()
    rebalance: RebalancePolicy = RebalancePolicy()
    budget: Budget = Budget()
    control: ControlPolicy = ControlPolicy()
    accounts: dict[str, AccountOverride] = Field(default_factory=dict)
    kafka: KafkaSettings = KafkaSettings()
    raw_risk: dict[str, Any] = Field(default_factory=dict, exclude=True, repr=False)

    @model_validator(mode="after")
    def _profiles_exist(self) -> Config:
        for acct in self.accounts:
            if acct in RESERVED_ACCOUNTS:
                raise ValueError(f"accounts.{acct}: account name {acct!r} is reserved for the guard's own table keys")
        names = [("profile", self.profile)] + [
            (f"accounts.{acct}.profile", o.profile) for acct, o in self.accounts.items()
        ]
        for where, name in names:
            if name is not None and name not in PROFILES:
                raise ValueError(f"{where}: unknown profile {name!r} (known: {', '.join(sorted(PROFILES))})")
        return self

    @cached_property
    def config_version(self) -> str:
        """The file's `version`, else a stable hash of its validated content."""
        if self.version:
            return self.version
        # Deployment settings (kafka) do not change a decision, so they do not change its version.
        canonical = json.dumps(self.model_dump(mode="json", exclude={"kafka"}), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @cached_property
    def _resolved(self) -> dict[str, RiskConfig]:
        return {acct: self._resolve(acct) for acct in self.accounts}

    @cached_property
    def _default_risk(self) -> RiskConfig:
        if self.profile is None:
            return self.risk
        return RiskConfig.model_validate(deep_merge(self.raw_risk, PROFILES[self.profile]))

    def risk_for(self, account: str) -> RiskConfig:
        """The resolved risk limits of one account (file <- profile <- account keys)."""
        resolved = self._resolved.get(account)
        return resolved if resolved is not None else self._default_risk

    def _resolve(self, account: str) -> RiskConfig:
        override = self.accounts[account]
        merged = self.raw_risk
        profile = override.profile or self.profile
        if profile is not None:
            merged = deep_merge(merged, PROFILES[profile])
        merged = deep_merge(merged, override.risk)
        own = override.risk.get("account")
        if isinstance(own, Mapping):  # the account's own quota replaces the file's, in either spelling
            spellings = ("daily_entry_quota", "daily_entry_quota_pct")
            for mine, other in (spellings, spellings[::-1]):
                if mine in own and other not in own:
                    merged = deep_merge(merged, {"account": {other: None}})
        if override.initial_balance is not None:
            merged = deep_merge(merged, {"account": {"initial_balance": override.initial_balance}})
        return RiskConfig.model_validate(merged)


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `overlay` into a copy of `base`; nested mappings merge, other values replace."""
    merged: dict[str, Any] = dict(base)
    for key, value in overlay.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names each bad key."""


def _format_errors(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "<root>"
        if prefix:
            path = f"{prefix}.{path}"
        lines.append(f"  {path}: {error['msg']}")
    return "\n".join(lines)


def config_from_dict(data: Mapping[str, Any] | None, source: str = "<config>") -> Config:
    """Validate a parsed YAML mapping into a Config, or raise ConfigError naming the keys."""
    data = dict(data or {})
    risk_raw = data.get("risk") or {}
    if not isinstance(risk_raw, Mapping):
        raise ConfigError(f"{source}: invalid configuration\n  risk: must be a mapping")
    try:
        config = Config.model_validate({**data, "raw_risk": dict(risk_raw)})
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid configuration\n{_format_errors(exc)}") from None
    except ValueError as exc:
        raise ConfigError(f"{source}: invalid configuration\n  {exc}") from None
    for account in config.accounts:
        try:
            config.risk_for(account)
        except ValidationError as exc:
            prefix = f"accounts.{account}.risk (after profile)"
            raise ConfigError(f"{source}: invalid configuration\n{_format_errors(exc, prefix)}") from None
    if config.profile is not None:
        try:
            config.risk_for("\x00default")
        except ValidationError as exc:
            raise ConfigError(f"{source}: invalid configuration\n{_format_errors(exc, 'risk')}") from None
    return config


def load_config(path: str | Path | None) -> Config:
    """Load and validate a YAML config file; None gives the built-in defaults."""
    if path is None:
        return config_from_dict({}, "<defaults>")
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read configuration: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{file}: the top level must be a mapping of keys")
    return config_from_dict(data, str(file))
