"""The local, real Kafka broker (SPEC §1): fetch 3.9.x jars with Maven, format KRaft storage, start on
127.0.0.1, wait until it accepts connections, stop only the process this module started.

State lives under `.cache/kafka/` (jars, data, logs, pid); nothing there is committed.

With `sasl=True` the client listener is SASL_PLAINTEXT with SCRAM-SHA-512, and with `tls_port` a
second SASL_SSL listener serves a self-signed certificate made with the JDK's `keytool`. The SCRAM
user comes from RISKGUARD_KAFKA_USERNAME / RISKGUARD_KAFKA_PASSWORD (or _PASSWORD_FILE) and is created
when the storage is formatted (KRaft `--add-scram`, as a salted password in a 0600 argument file
deleted right after: the password never reaches a command line, a log or a properties file).
Brokers talk to themselves (transaction markers) over the same SASL listener as an internal SCRAM
user with a random password; only the CONTROLLER listener stays PLAINTEXT, on 127.0.0.1.
Secrets live in `security-<port>/` (0700, files 0600) next to the data directory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.security import PASSWORD_ENV, USERNAME_ENV, Credentials, SecurityConfigError, credentials_from_env

PROJECT = Path(__file__).resolve().parents[1]
POM = PROJECT / "deploy" / "kafka" / "pom.xml"
LOG4J = PROJECT / "deploy" / "kafka" / "log4j.properties"
LOG4J_ENV = "RISKGUARD_KAFKA_LOG4J"  # another log4j.properties for the local broker (debugging)

SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
INTER_BROKER_USER = "riskguard-interbroker"
_USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,128}")
_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or stopped."""


@dataclass(frozen=True)
class Broker:
    """Where one local broker keeps its files, and the ports it listens on."""

    root: Path = PROJECT / ".cache" / "kafka"
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    sasl: bool = False  # client listener SASL_PLAINTEXT (SCRAM-SHA-512) instead of PLAINTEXT
    tls_port: int | None = None  # with sasl: also a SASL_SSL listener here (self-signed certificate)

    @property
    def libs(self) -> Path:
        return self.root / "libs"

    @property
    def data(self) -> Path:
        return self.root / f"data-{self.port}"

    @property
    def logs(self) -> Path:
        return self.root / f"logs-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.root / f"broker-{self.port}.pid"

    @property
    def properties(self) -> Path:
        return self.root / f"server-{self.port}.properties"

    @property
    def security(self) -> Path:
        return self.root / f"security-{self.port}"

    @property
    def ca_file(self) -> Path:
        """The broker's self-signed certificate (PEM): what clients trust for the SASL_SSL listener."""
        return self.security / "ca.pem"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def tls_bootstrap(self) -> str | None:
        return f"{self.host}:{self.tls_port}" if self.tls_port is not None else None


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_jars(broker: Broker) -> Path:
    """Download Kafka and its runtime dependencies with Maven into the cache (once)."""
    if any(broker.libs.glob("kafka_2.13-3.9.*.jar")):
        return broker.libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed to fetch the Kafka broker jars; install it and retry")
    broker.libs.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={broker.libs}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not any(broker.libs.glob("kafka_2.13-3.9.*.jar")):
        raise BrokerError(f"fetching the Kafka jars failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return broker.libs


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("a Java runtime (java, 17+) is needed to run the local Kafka broker")
    return java


def _log4j() -> Path:
    return Path(os.environ.get(LOG4J_ENV) or LOG4J)


def _child_env() -> dict[str, str]:
    """The environment of the Java processes, without the client password."""
    return {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600), also when it exists already."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


@dataclass(frozen=True)
class _Secrets:
    """What a SASL broker needs at start: the inter-broker password and, with TLS, the keystore."""

    inter_broker_password: str
    keystore: Path | None = None
    keystore_password: str | None = None


def _listeners(broker: Broker, secrets_: _Secrets | None) -> list[str]:
    controller = f"CONTROLLER://{broker.host}:{broker.controller_port}"
    if secrets_ is None:
        return [
            f"listeners=PLAINTEXT://{broker.host}:{broker.port},{controller}",
            f"advertised.listeners=PLAINTEXT://{broker.host}:{broker.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ]
    client = [f"SASL_PLAINTEXT://{broker.host}:{broker.port}"]
    if broker.tls_port is not None:
        client.append(f"SASL_SSL://{broker.host}:{broker.tls_port}")
    scram = SCRAM_MECHANISM.lower()
    lines = [
        f"listeners={','.join([*client, controller])}",
        f"advertised.listeners={','.join(client)}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
        # The login module's user is what the broker authenticates as when it connects to itself.
        f"listener.name.sasl_plaintext.{scram}.sasl.jaas.config={_SCRAM_MODULE} required "
        f'username="{INTER_BROKER_USER}" password="{secrets_.inter_broker_password}";',
    ]
    if broker.tls_port is not None and secrets_.keystore is not None:
        lines += [
            f"listener.name.sasl_ssl.{scram}.sasl.jaas.config={_SCRAM_MODULE} required;",
            f"listener.name.sasl_ssl.ssl.keystore.location={secrets_.keystore}",
            "listener.name.sasl_ssl.ssl.keystore.type=PKCS12",
            f"listener.name.sasl_ssl.ssl.keystore.password={secrets_.keystore_password}",
            f"listener.name.sasl_ssl.ssl.key.password={secrets_.keystore_password}",
        ]
    return lines


def _write_properties(broker: Broker, secrets_: _Secrets | None = None) -> None:
    broker.root.mkdir(parents=True, exist_ok=True)
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{broker.host}:{broker.controller_port}",
        *_listeners(broker, secrets_),
        f"log.dirs={broker.data}",
        "num.partitions=4",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "log.retention.hours=24",
        # Oversized messages (> 1 MiB) must reach the guard so it can dead-letter them (SPEC §8).
        "message.max.bytes=4194304",
        "replica.fetch.max.bytes=4194304",
    ]
    _write_private(broker.properties, "\n".join(lines) + "\n")  # 0600: it may hold the SASL secrets


def _classpath(broker: Broker) -> str:
    return str(broker.libs / "*")


def _formatted(broker: Broker) -> bool:
    return (broker.data / "meta.properties").exists()


def _format(broker: Broker, users: Mapping[str, str] | None = None) -> None:
    """Format the storage once; `users` (name: password) become SCRAM-SHA-512 credentials."""
    if _formatted(broker):
        return
    extra: list[str] = []
    hidden: list[str] = []
    args_file = broker.security / "format.args"
    if users:
        lines = []
        for name, password in users.items():
            salt = secrets.token_bytes(32)
            salted = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, SCRAM_ITERATIONS)
            encoded = base64.b64encode(salt).decode(), base64.b64encode(salted).decode()
            hidden += [*encoded, password]
            lines += [
                "--add-scram",
                f'{SCRAM_MECHANISM}=[name={name},iterations={SCRAM_ITERATIONS},salt="{encoded[0]}",'
                f'saltedpassword="{encoded[1]}"]',
            ]
        _write_private(args_file, "\n".join(lines) + "\n")
        extra = [f"@{args_file}"]  # argparse4j reads the arguments from the file: nothing on the command line
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [
                _java(),
                "-cp",
                _classpath(broker),
                f"-Dlog4j.configuration=file:{_log4j()}",
                f"-Dkafka.logs.dir={broker.logs}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                str(uuid.uuid5(uuid.NAMESPACE_URL, f"riskguard-{broker.port}")).replace("-", "")[:22],
                "-c",
                str(broker.properties),
                *extra,
            ],
            capture_output=True,
            text=True,
            check=False,
            env=_child_env(),
        )
    finally:
        args_file.unlink(missing_ok=True)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        for value in hidden:
            output = output.replace(value, "***")
        raise BrokerError(f"formatting KRaft storage failed:\n{output}")


def _fingerprint(password: str, salt: bytes) -> str:
    return base64.b64encode(hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, 200_000)).decode()


def _user_file(broker: Broker) -> Path:
    return broker.security / "scram-user.json"


def _sasl_secrets(broker: Broker, user: Credentials) -> tuple[_Secrets, dict[str, str]]:
    """The broker's secrets for a SASL start, and the SCRAM users still to create at format time.

    Storage formatted before (with or without SCRAM) keeps its users: starting it for another
    user or password, or storage formatted without SCRAM, is refused with what to do.
    """
    if not _USERNAME.fullmatch(user.username) or user.username == INTER_BROKER_USER:
        raise BrokerError(
            f"{USERNAME_ENV}: use 1-128 of A-Z a-z 0-9 . _ @ - (and not {INTER_BROKER_USER}) for the SCRAM user"
        )
    broker.security.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(broker.security, 0o700)
    inter_file = broker.security / "interbroker.secret"
    users: dict[str, str] = {}
    if _formatted(broker):
        try:
            recorded = json.loads(_user_file(broker).read_text(encoding="utf-8"))
            inter_broker = inter_file.read_text(encoding="utf-8").strip()
        except (OSError, ValueError):
            raise BrokerError(
                f"{broker.data} was formatted without SCRAM users; stop the broker and remove that directory "
                "to format it again with --sasl"
            ) from None
        same = recorded.get("user") == user.username and hmac.compare_digest(
            recorded.get("fingerprint", ""),
            _fingerprint(user.password.reveal(), base64.b64decode(recorded.get("salt", ""))),
        )
        if not same:
            raise BrokerError(
                f"{broker.data} was formatted for another SCRAM user or password than {USERNAME_ENV} / "
                f"{PASSWORD_ENV}; use those, or stop the broker and remove that directory to format it again"
            )
    else:
        inter_broker = secrets.token_urlsafe(32)
        _write_private(inter_file, inter_broker + "\n")
        users = {user.username: user.password.reveal(), INTER_BROKER_USER: inter_broker}
    keystore, keystore_password = _keystore(broker) if broker.tls_port is not None else (None, None)
    return _Secrets(inter_broker, keystore, keystore_password), users


def _record_user(broker: Broker, user: Credentials) -> None:
    salt = secrets.token_bytes(16)
    record = {
        "user": user.username,
        "mechanism": SCRAM_MECHANISM,
        "salt": base64.b64encode(salt).decode(),
        "fingerprint": _fingerprint(user.password.reveal(), salt),
    }
    _write_private(_user_file(broker), json.dumps(record) + "\n")


def _keystore(broker: Broker) -> tuple[Path, str]:
    """A PKCS12 keystore with a self-signed certificate for 127.0.0.1 (made once, kept), and its CA PEM."""
    keystore = broker.security / "broker.p12"
    password_file = broker.security / "keystore.secret"
    if keystore.exists() and password_file.exists() and broker.ca_file.exists():
        return keystore, password_file.read_text(encoding="utf-8").strip()
    keytool = shutil.which("keytool")
    if keytool is None:
        raise BrokerError("the JDK's keytool is needed to make the broker's TLS certificate")
    password = secrets.token_urlsafe(32)
    _write_private(password_file, password + "\n")
    keystore.unlink(missing_ok=True)
    env = {**_child_env(), "RG_KEYSTORE_PASSWORD": password}
    common = ["-keystore", str(keystore), "-storetype", "PKCS12", "-storepass:env", "RG_KEYSTORE_PASSWORD"]
    commands = [
        [
            keytool,
            "-genkeypair",
            "-alias",
            "broker",
            "-keyalg",
            "EC",
            "-groupname",
            "secp256r1",
            "-validity",
            "825",
            "-dname",
            "CN=riskguard local broker",
            "-ext",
            f"SAN=IP:{broker.host},DNS:localhost",
            "-ext",
            "BC:c=ca:true",
            "-keypass:env",
            "RG_KEYSTORE_PASSWORD",
            *common,
        ],
        [keytool, "-exportcert", "-rfc", "-alias", "broker", "-file", str(broker.ca_file), *common],
    ]
    for argv in commands:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            argv, capture_output=True, text=True, check=False, env=env
        )
        if result.returncode != 0:
            raise BrokerError(f"keytool failed:\n{(result.stdout + result.stderr).replace(password, '***')}")
    os.chmod(keystore, 0o600)
    return keystore, password


def _cluster_id(broker: Broker) -> str:
    """A stable KRaft cluster id (base64url of a UUID, as `kafka-storage random-uuid` prints)."""
    raw = uuid.uuid5(uuid.NAMESPACE_URL, f"riskguard-{broker.port}").bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _our_pid(broker: Broker) -> int | None:
    try:
        pid = int(broker.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return pid if "kafka.Kafka" in cmdline and str(broker.properties) in cmdline else None


def status(broker: Broker) -> str:
    """'running (pid N)', 'running (not started by riskguard)' or 'stopped'."""
    pid = _our_pid(broker)
    if pid is not None and answers(broker.host, broker.port):
        return f"running (pid {pid}) on {broker.bootstrap}"
    if answers(broker.host, broker.port):
        return f"a broker not started by riskguard answers on {broker.bootstrap}"
    return "stopped"


def up(broker: Broker, timeout: float = 90.0, env: Mapping[str, str] | None = None) -> str:
    """Start the broker unless one answers already; return once it accepts connections.

    With `broker.sasl` the SCRAM user comes from RISKGUARD_KAFKA_USERNAME / RISKGUARD_KAFKA_PASSWORD
    (or `env`); the password is never written to a log, to stdout or to a command line.
    """
    if broker.tls_port is not None and not broker.sasl:
        raise BrokerError("a TLS listener is offered only with SASL (SASL_SSL): add --sasl")
    if answers(broker.host, broker.port):
        return f"already answering on {broker.bootstrap}"
    user: Credentials | None = None
    if broker.sasl:
        try:
            user = credentials_from_env(env)
        except SecurityConfigError as exc:
            raise BrokerError(str(exc)) from None
        if user is None:
            raise BrokerError(f"--sasl needs {USERNAME_ENV} and {PASSWORD_ENV} (or RISKGUARD_KAFKA_PASSWORD_FILE)")
    fetch_jars(broker)
    if user is not None:
        secrets_, users = _sasl_secrets(broker, user)
        _write_properties(broker, secrets_)
        _format(broker, users)
        if users:
            _record_user(broker, user)
    else:
        _write_properties(broker)
        _format(broker)
    broker.logs.mkdir(parents=True, exist_ok=True)
    heap = os.environ.get("RISKGUARD_KAFKA_HEAP", "768m")
    since = _log_size(broker)  # server.log is appended to: only a start line written after this one counts
    with (broker.logs / "stdout.log").open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                _java(),
                f"-Xmx{heap}",
                f"-Xms{heap}",
                "-XX:+UseG1GC",
                "-cp",
                _classpath(broker),
                f"-Dlog4j.configuration=file:{_log4j()}",
                f"-Dkafka.logs.dir={broker.logs}",
                "kafka.Kafka",
                str(broker.properties),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_child_env(),
        )
    broker.pid_file.write_text(str(process.pid), encoding="utf-8")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(f"the broker exited with code {process.returncode}:\n{_exit_tail(broker, since)}")
        if answers(broker.host, broker.port) and _started(broker, since):
            where = broker.bootstrap if broker.tls_port is None else f"{broker.bootstrap} and {broker.tls_bootstrap}"
            how = "" if not broker.sasl else f" ({SCRAM_MECHANISM}{', SASL_SSL' if broker.tls_port else ''})"
            return f"started (pid {process.pid}) on {where}{how}"
        time.sleep(0.25)
    down(broker)
    raise BrokerError(f"the broker did not accept connections within {timeout:.0f} s")


def _exit_tail(broker: Broker, since: int) -> str:
    """What the broker said before it exited: stdout, and server.log from this start on (a custom log4j
    may send the fatal error only to server.log)."""
    parts = []
    stdout = (broker.logs / "stdout.log").read_text(errors="replace")[-3000:].strip()
    if stdout:
        parts.append(stdout)
    try:
        with (broker.logs / "server.log").open("rb") as handle:
            handle.seek(since if handle.seek(0, os.SEEK_END) >= since else 0)
            server = handle.read().decode(errors="replace")
    except OSError:
        server = ""
    errors = [line for line in server.splitlines() if "ERROR" in line or "Exception" in line or "FATAL" in line]
    if errors:
        parts.append("server.log:\n" + "\n".join(errors[-20:])[-3000:])
    return "\n".join(parts) or "(no output in stdout.log or server.log)"


def _log_size(broker: Broker) -> int:
    try:
        return (broker.logs / "server.log").stat().st_size
    except OSError:
        return 0


def _started(broker: Broker, since: int = 0) -> bool:
    """True once server.log says "Kafka Server started" after byte `since` (its size before this start).

    The log is appended to across restarts, so after a stop or a kill -9 it still holds the previous
    run's line, while the new process may already accept connections before it is ready.
    """
    log = broker.logs / "server.log"
    try:
        with log.open("rb") as handle:
            if handle.seek(0, os.SEEK_END) >= since:  # a shorter log was replaced: read it all
                handle.seek(since)
            else:
                handle.seek(0)
            return b"Kafka Server started" in handle.read()
    except OSError:
        return False


def down(broker: Broker, timeout: float = 30.0) -> str:
    """Stop the broker this module started (SIGTERM, then SIGKILL); leave any other alone."""
    pid = _our_pid(broker)
    if pid is None:
        broker.pid_file.unlink(missing_ok=True)
        return "no broker started by riskguard is running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        if _zombie(pid):
            break
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists() and not _zombie(pid):
        os.kill(pid, signal.SIGKILL)
    broker.pid_file.unlink(missing_ok=True)
    return f"stopped (pid {pid})"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return True
