"""requirements.lock against pyproject.toml: every dependency locked with hashes, Faust pinned as the worker needs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from streams.worker import faust_compat

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(?:\s*;[^\\]*)?\s*\\$")


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def locked() -> dict[str, tuple[str, int]]:
    """Package -> (version, number of hashes) of every entry in requirements.lock."""
    return read_lock(ROOT / "requirements.lock")


def read_lock(path: Path) -> dict[str, tuple[str, int]]:
    entries: dict[str, tuple[str, int]] = {}
    current = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := PIN.match(line):
            current = canonicalize_name(match.group(1))
            assert current not in entries, f"{current} locked twice"
            entries[current] = (match.group(2), 0)
        elif line.strip().startswith("--hash=sha256:"):
            version, hashes = entries[current]
            entries[current] = (version, hashes + 1)
        else:
            assert not line.strip() or line.lstrip().startswith("#"), f"not a pinned, hashed entry: {line!r}"
    return entries


def requirements(project: dict[str, Any]) -> list[Requirement]:
    extras = project["project"]["optional-dependencies"]
    deps = project["project"]["dependencies"] + [dep for name in sorted(extras) for dep in extras[name]]
    return [Requirement(dep) for dep in deps]


def test_lock_when_read_then_every_dependency_and_extra_pinned_in_range_with_hashes(
    project: dict[str, Any], locked: dict[str, tuple[str, int]]
) -> None:
    for requirement in requirements(project):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is in pyproject.toml but not in requirements.lock: run `make lock`"
        version, _ = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} not in {requirement}"
    assert all(hashes >= 1 for _, hashes in locked.values()), "every entry carries its hashes"


def test_faust_and_aiokafka_when_pinned_then_pyproject_lock_and_faust_compat_agree(
    project: dict[str, Any], locked: dict[str, tuple[str, int]]
) -> None:
    by_name = {canonicalize_name(r.name): r for r in requirements(project)}
    pins = (("faust-streaming", faust_compat.FAUST_VERSION), ("aiokafka", faust_compat.AIOKAFKA_VERSION))
    for package, wanted in pins:
        assert str(by_name[package].specifier) == f"=={wanted}", f"{package}: pyproject.toml must pin exactly {wanted}"
        assert locked[package][0] == wanted, f"{package}: requirements.lock has {locked[package][0]}, not {wanted}"


def test_build_system_when_license_is_an_spdx_string_then_the_locked_setuptools_builds_it(
    project: dict[str, Any], locked: dict[str, tuple[str, int]]
) -> None:
    assert isinstance(project["project"]["license"], str), "PEP 639: an SPDX expression, not a table"
    backend = {canonicalize_name(r.name): r for r in map(Requirement, project["build-system"]["requires"])}
    assert backend["setuptools"].specifier.contains("77"), "setuptools accepts SPDX license strings from 77 on"
    assert not backend["setuptools"].specifier.contains("76.9")
    assert Version(locked["setuptools"][0]) >= Version("77"), "make install builds with the locked setuptools"


def test_worker_lock_when_read_then_the_runtime_dependencies_alone_at_the_main_locks_versions_with_hashes(
    project: dict[str, Any], locked: dict[str, tuple[str, int]]
) -> None:
    worker = read_lock(ROOT / "requirements-worker.lock")  # what deploy/Dockerfile installs
    for dep in project["project"]["dependencies"]:
        name = canonicalize_name(Requirement(dep).name)
        assert name in worker, f"{name} is a runtime dependency but not in requirements-worker.lock: run `make lock`"
    for name, (version, hashes) in worker.items():
        assert name in locked and locked[name][0] == version, f"{name}=={version} differs from requirements.lock"
        assert hashes >= 1
    extras_only = {"pandas", "vectorbt", "nautilus-trader", "pytest", "mypy", "ruff"} & set(locked)
    assert extras_only and not extras_only & set(worker), "the worker image installs no test or backtest package"
