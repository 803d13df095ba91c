"""Kafka client security from the environment (streams.security) and the SASL broker's refusals (SPEC §8)."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import faust
import pytest
from faust.types.auth import AuthProtocol, SASLMechanism

from streams.broker import Broker, BrokerError, _Secrets, _write_properties, up
from streams.security import KafkaSecurity, Secret, SecurityConfigError, client_kwargs, faust_credentials

PASSWORD = 'pa55-Wörd,with]odd=chars"'  # noqa: S105 - a test password
CREDS = {"RISKGUARD_KAFKA_USERNAME": "alice", "RISKGUARD_KAFKA_PASSWORD": PASSWORD}


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("", encoding="utf-8")  # existence is checked here; contents only when a context is made
    return str(path)


def test_from_env_when_nothing_set_then_plaintext_and_no_faust_credentials() -> None:
    assert KafkaSecurity.from_env({}).protocol == "PLAINTEXT"
    assert client_kwargs({}) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials({}) is None


def test_from_env_when_username_and_password_then_sasl_plaintext_scram_sha_512_kwargs() -> None:
    kwargs = client_kwargs(CREDS)

    assert kwargs == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }


def test_from_env_when_ca_file_too_then_sasl_ssl_with_a_verifying_context(ca_file: str) -> None:
    security = KafkaSecurity.from_env({**CREDS, "RISKGUARD_KAFKA_CA_FILE": ca_file})
    system = KafkaSecurity.from_env({**CREDS, "RISKGUARD_KAFKA_SECURITY_PROTOCOL": "sasl_ssl"})
    context = system.ssl_context()

    assert security.protocol == "SASL_SSL"
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert system.aiokafka_kwargs()["security_protocol"] == "SASL_SSL"


def test_faust_credentials_when_sasl_then_scram_sasl_credentials_that_hide_the_password() -> None:
    credentials = faust_credentials({**CREDS, "RISKGUARD_KAFKA_SASL_MECHANISM": "scram-sha-256"})

    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_256
    assert credentials.protocol is AuthProtocol.SASL_PLAINTEXT
    assert (credentials.username, credentials.password) == ("alice", PASSWORD)
    assert PASSWORD not in repr(credentials)


def test_faust_credentials_when_sasl_ssl_then_the_protocol_follows_the_context() -> None:
    credentials = faust_credentials({**CREDS, "RISKGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    tls_only = faust_credentials({"RISKGUARD_KAFKA_SECURITY_PROTOCOL": "SSL"})

    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert isinstance(tls_only, faust.SSLCredentials) and tls_only.protocol is AuthProtocol.SSL


def test_repr_and_str_when_printed_then_the_password_never_shows() -> None:
    security = KafkaSecurity.from_env(CREDS)
    shown = repr(security) + str(security) + security.describe() + f"{security.credentials}"

    assert PASSWORD not in shown
    assert "alice" in shown and "***" in shown
    assert security.describe() == "SASL_PLAINTEXT SCRAM-SHA-512 as alice"
    assert Secret("x") == Secret("x") and Secret("x") != Secret("y")


def test_password_file_when_given_then_its_first_line_is_the_password(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n", encoding="utf-8")

    kwargs = client_kwargs({"RISKGUARD_KAFKA_USERNAME": "alice", "RISKGUARD_KAFKA_PASSWORD_FILE": str(path)})

    assert kwargs["sasl_plain_password"] == PASSWORD


def test_explicit_plaintext_when_credentials_set_then_they_are_not_sent() -> None:
    kwargs = client_kwargs({**CREDS, "RISKGUARD_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"})

    assert kwargs == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RISKGUARD_KAFKA_USERNAME": "alice"}, "RISKGUARD_KAFKA_PASSWORD"),
        ({"RISKGUARD_KAFKA_PASSWORD": PASSWORD}, "RISKGUARD_KAFKA_USERNAME is not"),
        ({"RISKGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "needs RISKGUARD_KAFKA_USERNAME"),
        ({"RISKGUARD_KAFKA_SECURITY_PROTOCOL": "TLS"}, "expected one of"),
        ({**CREDS, "RISKGUARD_KAFKA_SASL_MECHANISM": "GSSAPI"}, "expected one of"),
        ({**CREDS, "RISKGUARD_KAFKA_CA_FILE": "/nonexistent/ca.pem"}, "no such file"),
    ],
)
def test_from_env_when_inconsistent_then_refused_without_echoing_the_password(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SecurityConfigError, match=message) as refused:
        KafkaSecurity.from_env(env)

    assert PASSWORD not in str(refused.value)


def test_broker_up_when_sasl_without_credentials_then_refused_before_anything_starts(tmp_path: Path) -> None:
    broker = Broker(root=tmp_path, port=1, controller_port=2, sasl=True)

    with pytest.raises(BrokerError, match="--sasl needs RISKGUARD_KAFKA_USERNAME"):
        up(broker, env={})
    with pytest.raises(BrokerError, match="add --sasl"):
        up(Broker(root=tmp_path, port=1, controller_port=2, tls_port=3), env=CREDS)
    assert not any(tmp_path.iterdir())


def test_broker_properties_when_sasl_then_owner_only_scram_listeners_and_plaintext_controller(tmp_path: Path) -> None:
    broker = Broker(root=tmp_path, port=1, controller_port=2, sasl=True, tls_port=3)

    _write_properties(broker, _Secrets("inter-secret", tmp_path / "broker.p12", "store-secret"))
    text = broker.properties.read_text(encoding="utf-8")

    assert stat.S_IMODE(broker.properties.stat().st_mode) == 0o600
    assert "listeners=SASL_PLAINTEXT://127.0.0.1:1,SASL_SSL://127.0.0.1:3,CONTROLLER://127.0.0.1:2" in text
    assert "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT" in text
    assert "sasl.enabled.mechanisms=SCRAM-SHA-512" in text
    assert "inter.broker.listener.name=SASL_PLAINTEXT" in text
    assert "PLAINTEXT://127.0.0.1:1" not in text.replace("SASL_PLAINTEXT://127.0.0.1:1", "")
