"""deploy/Dockerfile, docker-compose.yml and its Prometheus and Grafana files, checked without a Docker engine.

The files are parsed (PyYAML; a small Dockerfile reader) and cross-checked against the repository and
against `WorkerSettings.from_config`, so that a renamed env var, a moved profile or a published port on
0.0.0.0 fails here. `promtool check config` runs on the Prometheus file; `docker compose config -q` runs too
when a Compose CLI is installed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from schemas.config import load_config
from streams.worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

# Process-level knobs a container may set that are not riskguard settings.
NON_SETTINGS_ENV = {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PATH", "HOME", "TZ"}


# ---------------------------------------------------------------------------------------------- helpers


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def dockerfile_stages(text: str) -> list[Stage]:
    """The build stages of a Dockerfile: (keyword, arguments) per instruction, continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments and blank lines, also inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif keyword != "ARG" or stages:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """The argument list of an exec-form (JSON array) instruction."""
    value = json.loads(args)
    assert isinstance(value, list), args
    assert all(isinstance(v, str) for v in value), args
    return value


def split_flags(args: str) -> tuple[dict[str, str], list[str]]:
    words = exec_form(args) if args.startswith("[") else shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    return flags, words


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    dest: PurePosixPath  # absolute, WORKDIR applied
    from_stage: str | None


def copies(stage: Stage) -> list[Copy]:
    """The COPY instructions of a stage, with their destinations made absolute (WORKDIR tracked)."""
    workdir = PurePosixPath("/")
    found = []
    for keyword, args in stage.instructions:
        if keyword == "WORKDIR":
            workdir = workdir / args
        elif keyword in ("COPY", "ADD"):
            assert keyword == "COPY", "use COPY, not ADD"
            flags, words = split_flags(args)
            assert len(words) >= 2, f"COPY needs a source and a destination: {args}"
            found.append(Copy(tuple(words[:-1]), workdir / words[-1], flags.get("from")))
    return found


def dockerfile_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            assert "=" in word, f"use ENV KEY=value: {args}"
            key, _, value = word.partition("=")
            env[key] = value
    return env


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment, list or mapping form, values as the container sees them."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    """(host ip, host port, container port) of every published port, short or long syntax."""
    result: list[tuple[str | None, str, str]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result.append((entry.get("host_ip"), str(entry.get("published", "")), str(entry["target"])))
            continue
        spec = str(entry).split("/")[0]  # drop /tcp, /udp
        if spec.startswith("["):  # [::1]:8080:80
            ip, _, rest = spec[1:].partition("]:")
            host, _, container = rest.partition(":")
            result.append((ip, host, container))
            continue
        parts = spec.split(":")
        if len(parts) == 3:
            result.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            result.append((None, parts[0], parts[1]))
        else:
            result.append((None, "", parts[0]))  # container port only: a random port on every interface
    return result


def listeners(value: str) -> dict[str, str]:
    """`NAME://host:port,...` as {NAME: "host:port"}."""
    result = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        result[name] = address
    return result


def port_of(address: str) -> str:
    return address.rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {name: svc for name, svc in services.items() if name.startswith("worker")}
    assert found, "no worker service in docker-compose.yml"
    return dict(sorted(found.items()))


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No riskguard or broker setting leaks in from the shell (`make test` exports KAFKA_BOOTSTRAP_SERVERS)."""
    for key in list(os.environ):
        if key.startswith("RISKGUARD_") or key == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(key)
    return monkeypatch


def settings_with(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict[str, Any]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = load_config(ROOT / "deploy" / "profiles" / "demo.yaml")
    return asdict(WorkerSettings.from_config(config))


_ALTERNATIVES = {"at_least_once": "exactly_once", "exactly_once": "at_least_once", "rocksdb://": "memory://"}


def probe_value(value: str) -> str:
    """A valid value unlike the given one and every default, of the same kind (integers stay integers)."""
    if value in _ALTERNATIVES:
        return _ALTERNATIVES[value]  # a setting with a fixed set of values is validated
    return str(int(value) + 7919) if value.isdigit() else f"{value}-probe"


def assert_every_setting_is_read(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    for key, value in env.items():
        if key in NON_SETTINGS_ENV or key.startswith("PYTHON") or key.startswith("PIP_"):
            continue
        with monkeypatch.context() as patch:
            probe = probe_value(value)
            settings = settings_with(patch, {key: probe})
            expected: Any = int(probe) if probe.isdigit() else probe
            assert expected in settings.values(), (
                f"{where} sets {key}, but WorkerSettings.from_config does not read it (settings: {settings})"
            )


# ---------------------------------------------------------------------------------------------- compose


def test_parse_when_compose_file_loaded_then_services_kafka_workers_and_ui(services: dict[str, Any]) -> None:
    assert {"kafka", "kafka-ui"} <= set(services)
    assert sum(name.startswith("worker") for name in services) >= 2, "two workers sharing one app id"


def test_image_when_kafka_service_then_official_apache_kafka_3_9(services: dict[str, Any]) -> None:
    image = services["kafka"]["image"]
    assert re.fullmatch(r"apache/kafka:3\.9\.\d+", image), f"{image}: Kafka 3.9.x (faust's assignor fails on 4.x)"


def test_environment_when_kafka_service_then_single_node_kraft(services: dict[str, Any]) -> None:
    env = environment(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1, "single-node KRaft: one voter"
    voter_id, _, voter_address = voters[0].partition("@")
    assert voter_id == node_id
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    bound = listeners(env["KAFKA_LISTENERS"])
    assert controller in bound, "the controller listener must be one of KAFKA_LISTENERS"
    assert port_of(voter_address) == port_of(bound[controller])
    assert voter_address.split(":")[0] in ("kafka", services["kafka"].get("hostname"))
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(bound) <= set(protocols), f"every listener needs a security protocol: {protocols}"
    assert env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT") in bound
    assert controller not in listeners(env["KAFKA_ADVERTISED_LISTENERS"]), "the controller is never advertised"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", f"{key} must be 1 on a single broker"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"


def test_cluster_id_when_set_then_base64url_uuid(services: dict[str, Any]) -> None:
    cluster_id = environment(services["kafka"]).get("CLUSTER_ID")
    if cluster_id is None:
        return  # the image then uses its own default id
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_listeners_when_kafka_published_then_external_advertises_the_published_host_port(
    services: dict[str, Any],
) -> None:
    kafka = services["kafka"]
    env = environment(kafka)
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    internal = advertised["PLAINTEXT"]
    assert internal == "kafka:9092", "the compose network reaches the broker at kafka:9092"
    external = [name for name in advertised if name != "PLAINTEXT"]
    assert external, "an EXTERNAL listener for clients on the host"
    bound = listeners(env["KAFKA_LISTENERS"])
    published = {container: (ip, host) for ip, host, container in published_ports(kafka)}
    for name in external:
        host, port = advertised[name].rsplit(":", 1)
        container_port = port_of(bound[name])
        assert container_port in published, f"listener {name} (:{container_port}) is not published"
        ip, host_port = published[container_port]
        assert (ip, host_port) == (host, port), f"{name} advertises {advertised[name]} but publishes {ip}:{host_port}"


def test_healthcheck_when_kafka_service_then_broker_api_versions(services: dict[str, Any]) -> None:
    test = services["kafka"]["healthcheck"]["test"]
    command = " ".join(test) if isinstance(test, list) else test
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in command
    assert "--bootstrap-server" in command


def test_ports_when_any_service_publishes_then_bound_to_loopback(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for ip, host, container in published_ports(service):
            assert ip == "127.0.0.1", f"{name} publishes {host}:{container} on {ip or 'every interface'}"
            assert host, f"{name}: {container} needs an explicit host port"


def test_build_when_worker_service_then_deploy_dockerfile(workers: dict[str, Any]) -> None:
    for name, service in workers.items():
        build = service["build"]
        context = ROOT / build["context"]
        assert context.resolve() == ROOT, f"{name}: build context is the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, f"{name}: builds deploy/Dockerfile"


def test_environment_when_worker_service_then_bootstrap_is_the_kafka_service(
    services: dict[str, Any], workers: dict[str, Any]
) -> None:
    advertised = listeners(environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"])
    for name, service in workers.items():
        bootstrap = environment(service)["KAFKA_BOOTSTRAP_SERVERS"]
        assert bootstrap.split(":")[0] == "kafka", f"{name}: {bootstrap}"
        assert bootstrap in advertised.values(), f"{name}: {bootstrap} is not an advertised listener"


def test_depends_on_when_worker_or_ui_then_kafka_healthy(services: dict[str, Any], workers: dict[str, Any]) -> None:
    for name in [*workers, "kafka-ui"]:
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on needs the long form with a condition"
        assert depends["kafka"]["condition"] == "service_healthy", name


def test_environment_when_workers_then_one_app_id_and_own_data_volume(
    compose: dict[str, Any], workers: dict[str, Any]
) -> None:
    app_ids = {environment(service).get("RISKGUARD_APP_ID", "riskguard") for service in workers.values()}
    assert len(app_ids) == 1, f"the workers must share one app id (one consumer group): {app_ids}"
    declared = set(compose.get("volumes") or {})
    seen = set()
    for name, service in workers.items():
        datadir = environment(service)["RISKGUARD_DATADIR"]
        mounts = [str(v).split(":") for v in service.get("volumes") or []]
        sources = [source for source, target, *_ in mounts if target == datadir]
        assert len(sources) == 1, f"{name}: a named volume on {datadir}"
        assert sources[0] in declared, f"{name}: {sources[0]} is not a declared named volume"
        assert sources[0] not in seen, f"{name}: RocksDB tables need a volume per worker"
        seen.add(sources[0])


def test_ports_when_first_worker_then_web_port_published_and_bound_to_all_interfaces(workers: dict[str, Any]) -> None:
    first = next(iter(workers.values()))
    env = environment(first)
    port = env.get("RISKGUARD_WEB_PORT", "6066")
    assert ("127.0.0.1", port, port) in published_ports(first)
    for name, service in workers.items():
        assert environment(service).get("RISKGUARD_WEB_BIND") == "0.0.0.0", name  # noqa: S104


def test_from_config_when_compose_worker_env_set_then_every_variable_is_read(
    workers: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    for name, service in workers.items():
        assert_every_setting_is_read(environment(service), clean_env, f"docker-compose.yml ({name})")


def test_from_config_when_compose_worker_env_applied_then_settings_match(
    workers: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    env = environment(next(iter(workers.values())))
    settings = settings_with(clean_env, env)
    assert settings["bootstrap"] == "kafka:9092"
    assert settings["web_bind"] == "0.0.0.0"  # noqa: S104
    assert settings["web_port"] == int(env.get("RISKGUARD_WEB_PORT", "6066"))
    assert settings["datadir"] == "/data"
    assert settings["partitions"] >= len(workers), "at least one partition per worker"


def test_image_when_kafka_ui_then_kafbat_pointing_at_kafka(services: dict[str, Any]) -> None:
    ui = services["kafka-ui"]
    assert ui["image"].startswith("ghcr.io/kafbat/kafka-ui")
    assert environment(ui)["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == "kafka:9092"
    assert ("127.0.0.1", "8080", "8080") in published_ports(ui)


def compose_validator() -> list[str]:
    """`docker compose … config -q` when the plugin answers, else compose-go's validator (`make system-deps`)."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
        if probe.returncode == 0:
            return [docker, "compose", "-f", str(COMPOSE), "config", "-q"]
    spec = ROOT / ".cache" / "bin" / "compose-spec"
    assert spec.is_file(), "neither `docker compose` nor compose-spec: `make system-deps` builds compose-spec with Go"
    return [str(spec), "--format", "json", str(COMPOSE)]


def test_config_when_validated_by_the_compose_specification_loader_then_valid() -> None:
    result = subprocess.run(compose_validator(), capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)

    assert result.returncode == 0, result.stderr


def test_config_when_a_service_has_an_unknown_key_then_the_validator_refuses_it(tmp_path: Path) -> None:
    # The validator really checks: the same file with one bad key fails.
    command = compose_validator()
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE.read_text(encoding="utf-8")
    broken.write_text(text.replace("    init: true\n", "    init: true\n    inti: true\n", 1), encoding="utf-8")
    command[command.index(str(COMPOSE))] = str(broken)

    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)

    assert result.returncode != 0
    assert "inti" in result.stderr + result.stdout


# ---------------------------------------------------------------------------------------------- Prometheus, Grafana


def binds(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repository path of every bind mount (`./source:target[:ro]`) of a compose service."""
    found = {}
    for volume in service.get("volumes") or []:
        source, target, *_ = str(volume).split(":")
        if source.startswith("."):
            found[target] = (ROOT / source).resolve()
    return found


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


@pytest.fixture(scope="module")
def prometheus_config(services: dict[str, Any]) -> Path:
    service = services["prometheus"]
    flags = dict(arg.split("=", 1) for arg in service["command"] if arg.startswith("--") and "=" in arg)
    mounted = binds(service)
    assert flags["--config.file"] in mounted, "Prometheus reads the config file compose mounts"
    return mounted[flags["--config.file"]]


def test_mounts_when_prometheus_or_grafana_then_every_bind_source_is_in_the_repository(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    for name in ("prometheus", "grafana"):
        service = services[name]
        assert re.fullmatch(r"\S+:v?\d+\.\d+\.\d+", service["image"]), f"{name}: pin an image version"
        for target, source in binds(service).items():
            assert source.is_relative_to(ROOT / "deploy"), f"{name}: {target} comes from deploy/, not {source}"
            assert source.exists(), f"{name}: {source} does not exist"
        named = [str(v).split(":")[0] for v in service["volumes"] if not str(v).startswith(".")]
        assert set(named) <= set(compose["volumes"]), f"{name}: undeclared named volume"


def test_scrape_targets_when_prometheus_config_read_then_every_worker_web_port_and_the_audit_consumer(
    prometheus_config: Path, workers: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    config = load_yaml(prometheus_config)
    expected = {
        f"{service.get('hostname', name)}:{environment(service).get('RISKGUARD_WEB_PORT', '6066')}"
        for name, service in workers.items()
    }
    audit = services["audit"]["command"]
    expected.add(f"{services['audit'].get('hostname', 'audit')}:{audit[audit.index('--metrics-port') + 1]}")
    jobs = [job for job in config["scrape_configs"] if job.get("metrics_path", "/metrics") == "/metrics"]
    targets = {target for job in jobs for static in job["static_configs"] for target in static["targets"]}
    assert targets == expected, "Prometheus scrapes every worker's and the audit consumer's /metrics, and only them"
    for service in [*workers.values(), services["audit"]]:
        assert environment(service).get("RISKGUARD_WEB_BIND") == "0.0.0.0"  # noqa: S104 - reachable on the network


def test_promtool_when_prometheus_config_checked_then_valid(prometheus_config: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make system-deps` installs Debian's prometheus package (needs root)"
    result = subprocess.run(
        [promtool, "check", "config", str(prometheus_config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ports_when_prometheus_and_grafana_then_their_ui_ports_on_loopback(services: dict[str, Any]) -> None:
    assert ("127.0.0.1", "9090", "9090") in published_ports(services["prometheus"])
    assert ("127.0.0.1", "3000", "3000") in published_ports(services["grafana"])
    assert services["prometheus"]["depends_on"] == sorted(n for n in services if n.startswith("worker"))


def test_provisioning_when_grafana_then_prometheus_datasource_and_the_dashboard_where_the_provider_reads(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    mounted = binds(grafana)
    provisioning = mounted["/etc/grafana/provisioning"]
    sources = [
        d for path in sorted((provisioning / "datasources").glob("*.yml")) for d in load_yaml(path)["datasources"]
    ]
    assert [(d["type"], d["url"], d.get("isDefault")) for d in sources] == [
        ("prometheus", f"http://prometheus:{published_ports(services['prometheus'])[0][2]}", True)
    ], "one default Prometheus datasource: the dashboard's `datasource` variable picks it"
    providers = [
        p for path in sorted((provisioning / "dashboards").glob("*.yml")) for p in load_yaml(path)["providers"]
    ]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    folder = PurePosixPath(providers[0]["options"]["path"])
    dashboards = {target: source for target, source in mounted.items() if PurePosixPath(target).parent == folder}
    assert list(dashboards.values()) == [ROOT / "deploy" / "grafana" / "riskguard-dashboard.json"]
    assert environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in dashboards


# ---------------------------------------------------------------------------------------------- Dockerfile


def test_from_when_dockerfile_read_then_python_3_11_bases(stages: list[Stage], final: Stage) -> None:
    names = {stage.name for stage in stages if stage.name}
    for stage in stages:
        if stage.base not in names:
            assert stage.base.startswith("python:3.11"), stage.base
    assert final.base.startswith("python:3.11") and "slim" in final.base, final.base


def test_user_when_final_stage_then_non_root(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the image must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]}"


def test_copy_when_from_build_context_then_every_source_exists(stages: list[Stage]) -> None:
    count = 0
    for stage in stages:
        for copy in copies(stage):
            if copy.from_stage is not None:
                assert copy.from_stage in {s.name for s in stages}, f"COPY --from={copy.from_stage}: unknown stage"
                continue
            for source in copy.sources:
                assert not source.startswith(("/", "..")), f"COPY {source}: outside the build context"
                assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
                count += 1
    assert count


def test_copy_when_pip_install_runs_then_everything_pyproject_needs_is_there(stages: list[Stage]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    installs = [
        (stage, args) for stage in stages for args in stage.all("RUN") if re.search(r"pip install\s+(\S+\s+)*\.", args)
    ]
    assert len(installs) == 1, "one `pip install .` of the project"
    stage, project_install = installs[0]
    assert "--no-deps" in project_install.split(), "the project alone: its dependencies come from the lock"
    locked = [args for args in stage.all("RUN") if "requirements-worker.lock" in args]
    assert locked and all("--require-hashes" in args.split() for args in locked), "the lock, hash-checked"
    copied = {source.rstrip("/") for copy in copies(stage) if copy.from_stage is None for source in copy.sources}
    assert needed <= copied, f"missing from the build stage: {sorted(needed - copied)}"


def test_cmd_when_image_runs_then_config_file_exists_in_repo(final: Stage) -> None:
    entrypoint = exec_form(final.all("ENTRYPOINT")[-1])
    assert entrypoint == ["riskguard"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "riskguard" in project["project"]["scripts"]
    cmd = exec_form(final.all("CMD")[-1])
    assert cmd[0] == "worker"
    config = PurePosixPath(cmd[cmd.index("--config") + 1])
    for copy in copies(final):
        if copy.from_stage is None and len(copy.sources) == 1 and config.is_relative_to(copy.dest):
            source = ROOT / copy.sources[0] / config.relative_to(copy.dest)
            assert source.is_file(), f"CMD config {config} maps to {source}, which does not exist"
            load_config(source)  # and it is a valid configuration
            return
    pytest.fail(f"CMD config {config} is not under any COPY destination of the final stage")


def test_healthcheck_when_image_runs_then_python_urllib_hits_health(final: Stage) -> None:
    checks = final.all("HEALTHCHECK")
    assert len(checks) == 1
    check = checks[0]
    assert "CMD" in check
    assert "urllib" in check and "/health" in check and "127.0.0.1" in check
    env = dockerfile_env(final)
    assert env["RISKGUARD_WEB_PORT"] in final.all("EXPOSE")[-1].split()
    assert "RISKGUARD_WEB_PORT" in check or env["RISKGUARD_WEB_PORT"] in check


def test_env_when_image_runs_then_container_defaults(final: Stage) -> None:
    env = dockerfile_env(final)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["RISKGUARD_WEB_PORT"] == "6066"
    assert env["RISKGUARD_WEB_BIND"] == "0.0.0.0"  # noqa: S104 - the container's web server must be reachable
    assert env["RISKGUARD_DATADIR"] == "/data"
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    volumes = " ".join(final.all("VOLUME"))
    assert "/data" in volumes


def test_from_config_when_dockerfile_env_set_then_every_variable_is_read(
    final: Stage, clean_env: pytest.MonkeyPatch
) -> None:
    assert_every_setting_is_read(dockerfile_env(final), clean_env, "deploy/Dockerfile")
