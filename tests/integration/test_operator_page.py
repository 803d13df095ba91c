"""The operator page at the worker's `/`, in headless Chromium, against a running worker on the real broker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from streams.testing import TapeBuilder
from streams.worker.settings import partition_for
from tests.integration.conftest import Deployment, stop

pytestmark = pytest.mark.integration

T0 = "2024-01-15T14:00:00Z"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# RISKGUARD_SCREENSHOT_DIR=docs/img refreshes the committed screenshot (docs/img/operator-page.png).
SCREENSHOT_DIR = "RISKGUARD_SCREENSHOT_DIR"


def chromium() -> str:
    """Debian's chromium (`make system-deps` installs it); RISKGUARD_CHROMIUM names another binary."""
    named = os.environ.get("RISKGUARD_CHROMIUM")
    found = shutil.which(named) if named else next(filter(None, map(shutil.which, BROWSERS)), None)
    assert found, "no Chromium: `make system-deps` installs Debian's chromium (apt-get install chromium)"
    return found


def headless(browser: str, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium without a display, JS given 10 s of virtual time to poll the views and render."""
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # the tests run as root in CI
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={workdir / 'chromium-profile'}",
            "--virtual-time-budget=10000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class Rows(HTMLParser):
    """The account rows (data-account, data-state), the list items and the code blocks of the rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.body: dict[str, str] = {}
        self.pre: list[str] = []
        self._list: str | None = None
        self._item: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and found.get("data-account") is not None:
            self.rows[found["data-account"] or ""] = found.get("data-state") or ""
        elif tag == "body":
            self.body = {k: v or "" for k, v in found.items()}
        elif tag == "ol":
            self._list = found.get("id")
            self.lists[self._list or ""] = []
        elif (tag == "li" and self._list is not None) or tag == "pre":
            self._item = []

    def handle_data(self, data: str) -> None:
        if self._item is not None:
            self._item.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "li" and self._item is not None and self._list is not None:
            self.lists[self._list].append("".join(self._item))
            self._item = None
        elif tag == "ol":
            self._list = None
        elif tag == "pre" and self._item is not None:
            self.pre.append("".join(self._item))
            self._item = None


def _tape() -> TapeBuilder:
    """a loses 6% in the day (daily limit 5%): HALTED, then its next signal is denied; b trades and stays ACTIVE."""
    tape = TapeBuilder().equity("a", T0, 100_000).equity("b", T0, 50_000)
    tape.flat_bar("X", T0, 10.0).flat_bar("Y", T0, 20.0)
    tape.fill("a", "X", "BUY", 100, 10.0, "2024-01-15T14:00:10Z")
    tape.signal("b", "Y", "2024-01-15T14:01:00Z", price=20.0, target_notional=2_000)
    tape.equity("a", "2024-01-15T14:05:00Z", 94_000)
    return tape.signal("a", "X", "2024-01-15T14:06:00Z", price=10.0, target_notional=5_000)


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return json.loads(reply.read())


def test_operator_page_when_a_tape_halts_an_account_then_chromium_shows_it_halted_with_its_halt_and_denial(
    deployment: Deployment,
) -> None:
    browser = chromium()
    path = deployment.workdir / "tape.jsonl"
    path.write_bytes(b"\n".join(_tape().to_bytes()) + b"\n")
    worker = deployment.start_worker("w1")
    port = deployment.ports["w1"]
    screenshot = deployment.workdir / "operator-page.png"
    try:
        assert deployment.cli("publish", str(path), "--ordered").returncode == 0
        drained = deployment.cli(
            "record", "--topics", "decisions,halts", "--out", str(deployment.workdir / "out.jsonl"), "--idle", "3"
        )
        assert drained.returncode == 0, drained.stderr
        listing = _get(port, "/accounts")
        dom = headless(browser, deployment.workdir, "--dump-dom", f"http://127.0.0.1:{port}/")
        shot = headless(
            browser,
            deployment.workdir,
            "--window-size=1400,900",
            f"--screenshot={screenshot}",
            f"http://127.0.0.1:{port}/",
        )
    finally:
        stop(worker)

    partitions = listing["of"]
    assert listing["accounts"] == [
        {"account": name, "partition": partition_for(name, partitions)} for name in ("a", "b")
    ], "one worker holds every partition, so every account"
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Rows()
    page.feed(dom.stdout)
    assert page.body.get("data-loaded") == "1", "the page polled the views and rendered"
    assert page.rows == {"a": "HALTED", "b": "ACTIVE"}
    assert any("ACTIVE → HALTED (daily_loss" in item for item in page.lists["halts"]), page.lists
    assert any(" a DENY " in item and "account/" in item for item in page.lists["decisions"]), page.lists
    assert any("RESUME" in block for block in page.pre), "a halted account's example control is a RESUME"
    assert shot.returncode == 0 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot.stderr[-2000:]
    assert screenshot.stat().st_size > 20_000, "a rendered page, not a blank one"
    if os.environ.get(SCREENSHOT_DIR):
        shutil.copyfile(screenshot, Path(os.environ[SCREENSHOT_DIR]) / "operator-page.png")
