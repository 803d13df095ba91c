"""Kafka client security from the environment (SPEC §8): SASL/SCRAM and TLS for aiokafka and Faust.

Every variable is optional; with none set, clients connect in PLAINTEXT as before.

    RISKGUARD_KAFKA_SECURITY_PROTOCOL  PLAINTEXT | SASL_PLAINTEXT | SASL_SSL | SSL. Unset: SASL_SSL when a
                                       username and a CA file are given, SASL_PLAINTEXT with a username
                                       only, SSL with a CA file only, else PLAINTEXT.
    RISKGUARD_KAFKA_SASL_MECHANISM     SCRAM-SHA-512 (default) | SCRAM-SHA-256 | PLAIN
    RISKGUARD_KAFKA_USERNAME           the SASL user (also the user `riskguard kafka up --sasl` creates)
    RISKGUARD_KAFKA_PASSWORD           its password, or
    RISKGUARD_KAFKA_PASSWORD_FILE      a file holding it (first line), e.g. a mounted secret
    RISKGUARD_KAFKA_CA_FILE            PEM certificates that sign the broker's (default: the system store)
    RISKGUARD_KAFKA_CERT_FILE          client certificate (PEM) for mutual TLS, optional
    RISKGUARD_KAFKA_KEY_FILE           its private key (PEM), optional

The password is held in a `Secret`, whose repr and str are `***`: printing or logging a
`KafkaSecurity` never shows it. It is revealed only in the keyword arguments handed to the client.
"""

from __future__ import annotations

import hmac
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROTOCOL_ENV = "RISKGUARD_KAFKA_SECURITY_PROTOCOL"
MECHANISM_ENV = "RISKGUARD_KAFKA_SASL_MECHANISM"
USERNAME_ENV = "RISKGUARD_KAFKA_USERNAME"
PASSWORD_ENV = "RISKGUARD_KAFKA_PASSWORD"  # noqa: S105 - the name of a variable, not a password
PASSWORD_FILE_ENV = "RISKGUARD_KAFKA_PASSWORD_FILE"  # noqa: S105 - idem
CA_FILE_ENV = "RISKGUARD_KAFKA_CA_FILE"
CERT_FILE_ENV = "RISKGUARD_KAFKA_CERT_FILE"
KEY_FILE_ENV = "RISKGUARD_KAFKA_KEY_FILE"

PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
DEFAULT_MECHANISM = "SCRAM-SHA-512"


class SecurityConfigError(ValueError):
    """The Kafka security variables are inconsistent (the message never contains a secret)."""


class Secret:
    """A string that does not show itself: repr and str are `***`; `reveal()` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


@dataclass(frozen=True)
class Credentials:
    """A SASL user; the password stays a `Secret`."""

    username: str
    password: Secret


def credentials_from_env(env: Mapping[str, str] | None = None) -> Credentials | None:
    """RISKGUARD_KAFKA_USERNAME and RISKGUARD_KAFKA_PASSWORD (or _PASSWORD_FILE); None when no username."""
    env = os.environ if env is None else env
    username = env.get(USERNAME_ENV, "").strip()
    password = env.get(PASSWORD_ENV)
    path = env.get(PASSWORD_FILE_ENV)
    if password is None and path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SecurityConfigError(f"{PASSWORD_FILE_ENV}: cannot read {path}: {exc.strerror}") from None
        password = lines[0] if lines else ""
    if not username:
        if password:
            raise SecurityConfigError(f"a Kafka password is set but {USERNAME_ENV} is not")
        return None
    if not password:
        raise SecurityConfigError(f"{USERNAME_ENV} is set but neither {PASSWORD_ENV} nor {PASSWORD_FILE_ENV} is")
    return Credentials(username, Secret(password))


@dataclass(frozen=True)
class KafkaSecurity:
    """How clients authenticate to and encrypt traffic with the broker; safe to print."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    credentials: Credentials | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise SecurityConfigError(f"{PROTOCOL_ENV}={self.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        if self.sasl:
            if self.mechanism not in MECHANISMS:
                raise SecurityConfigError(
                    f"{MECHANISM_ENV}={self.mechanism!r}: expected one of {', '.join(MECHANISMS)}"
                )
            if self.credentials is None:
                raise SecurityConfigError(f"{self.protocol} needs {USERNAME_ENV} and {PASSWORD_ENV}")
        for name, path in ((CA_FILE_ENV, self.ca_file), (CERT_FILE_ENV, self.cert_file), (KEY_FILE_ENV, self.key_file)):
            if path and not Path(path).is_file():
                raise SecurityConfigError(f"{name}={path}: no such file")
        if self.key_file and not self.cert_file:
            raise SecurityConfigError(f"{KEY_FILE_ENV} needs {CERT_FILE_ENV}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        """Read the RISKGUARD_KAFKA_* security variables (see the module docstring)."""
        env = os.environ if env is None else env
        credentials = credentials_from_env(env)
        ca_file = env.get(CA_FILE_ENV) or None
        cert_file = env.get(CERT_FILE_ENV) or None
        protocol = env.get(PROTOCOL_ENV, "").strip().upper()
        if not protocol:
            tls = bool(ca_file or cert_file)
            if credentials is not None:
                protocol = "SASL_SSL" if tls else "SASL_PLAINTEXT"
            else:
                protocol = "SSL" if tls else "PLAINTEXT"
        sasl = protocol.startswith("SASL_")
        mechanism = env.get(MECHANISM_ENV, "").strip().upper() or DEFAULT_MECHANISM
        return cls(
            protocol=protocol,
            mechanism=mechanism if sasl else None,
            credentials=credentials if sasl else None,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=env.get(KEY_FILE_ENV) or None,
        )

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SASL_SSL", "SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying client context (the CA file, else the system store); None without TLS."""
        if not self.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl and self.credentials is not None:
            kwargs["sasl_mechanism"] = self.mechanism
            kwargs["sasl_plain_username"] = self.credentials.username
            kwargs["sasl_plain_password"] = self.credentials.password.reveal()
        return kwargs

    def faust_credentials(self) -> Any:
        """Faust's `broker_credentials`: SASLCredentials, SSLCredentials, or None for PLAINTEXT."""
        if self.protocol == "PLAINTEXT":
            return None
        import faust

        if self.sasl and self.credentials is not None:
            return faust.SASLCredentials(
                username=self.credentials.username,
                password=self.credentials.password.reveal(),
                mechanism=self.mechanism,
                ssl_context=self.ssl_context(),  # None for SASL_PLAINTEXT; SASL_SSL otherwise
            )
        return faust.SSLCredentials(self.ssl_context())

    def describe(self) -> str:
        """One line for logs, e.g. `SASL_SSL SCRAM-SHA-512 as alice`."""
        if self.sasl and self.credentials is not None:
            return f"{self.protocol} {self.mechanism} as {self.credentials.username}"
        return self.protocol


def client_kwargs(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The aiokafka security keyword arguments from the environment."""
    return KafkaSecurity.from_env(env).aiokafka_kwargs()


def faust_credentials(env: Mapping[str, str] | None = None) -> Any:
    """Faust's `broker_credentials` from the environment (None: PLAINTEXT)."""
    return KafkaSecurity.from_env(env).faust_credentials()


def control_key() -> bytes | None:
    """The operators' HMAC key from RISKGUARD_CONTROL_KEY (never logged)."""
    key = os.environ.get("RISKGUARD_CONTROL_KEY")
    return key.encode("utf-8") if key else None
