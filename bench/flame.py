"""Aggregate a `py-spy record -f raw` file like a flamegraph: self time, inclusive time, time per level.

Record with `py-spy record -f raw -F --full-filenames -p PID -d 30 -o worker.raw` (`-F`: one frame per
function, `--full-filenames`: frames of this project map back to their qualified names).

Usage: python -m bench.flame worker.raw [--top 25]
"""

from __future__ import annotations

import argparse
import ast
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>.*):(?P<line>\d+)\)$")
_STAGES = {"MarketStage": "market", "AccountStage": "account", "SymbolStage": "symbol", "PortfolioStage": "portfolio"}
_SNAPSHOT = re.compile(r"^(dump|load)_(market|account|symbol|portfolio)$")


@dataclass(frozen=True)
class Frame:
    """One stack frame: function, file, line, and the qualified name when the file is ours."""

    func: str
    path: str
    line: int
    qualname: str

    @property
    def ours(self) -> bool:
        return self.path.startswith(str(ROOT)) and "/.venv/" not in self.path

    @property
    def short(self) -> str:
        """`qualname (relative/path.py)` for our frames, `func (package/file.py)` for libraries."""
        if self.ours:
            return f"{self.qualname} ({Path(self.path).relative_to(ROOT)})"
        parts = Path(self.path).parts
        if "site-packages" in parts:
            parts = parts[parts.index("site-packages") + 1 :]
        elif len(parts) > 2:
            parts = parts[-2:]
        return f"{self.func} ({'/'.join(parts)})"

    @property
    def package(self) -> str:
        """The top-level package a library frame comes from (`faust`, `aiokafka`, ...), `ours` or `python`."""
        if self.ours:
            return "ours"
        parts = Path(self.path).parts
        if "site-packages" in parts:
            return parts[parts.index("site-packages") + 1].split(".")[0]
        return "python"


@cache
def _spans(path: str) -> tuple[tuple[int, int, str], ...]:
    """(first line incl. decorators, last line, qualified name) of every function in a source file."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return ()
    found: list[tuple[int, int, str]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                found.append((first, child.end_lineno or child.lineno, name))
                walk(child, f"{name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return tuple(found)


def qualname(path: str, line: int, func: str) -> str:
    """The innermost function of `path` whose lines hold `line`; `func` when none does."""
    best: tuple[int, int, str] | None = None
    for first, last, name in _spans(path):
        if first <= line <= last and (best is None or first >= best[0]):
            best = (first, last, name)
    return best[2] if best is not None else func


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text.strip())
    if match is None:
        return Frame(text.strip(), "", 0, text.strip())
    path, line, func = match["path"], int(match["line"]), match["func"]
    ours = path.startswith(str(ROOT)) and "/.venv/" not in path
    return Frame(func, path, line, qualname(path, line, func) if ours else func)


def parse_raw(lines: list[str]) -> list[tuple[list[Frame], int]]:
    """Stacks (root first) and their sample counts from py-spy's raw (collapsed) format."""
    stacks: list[tuple[list[Frame], int]] = []
    for raw in lines:
        text = raw.strip()
        if not text:
            continue
        stack, _, count = text.rpartition(" ")
        if not count.isdigit():
            continue
        stacks.append(([parse_frame(f) for f in stack.split(";") if f], int(count)))
    return stacks


def _level(stack: list[Frame]) -> str | None:
    for frame in reversed(stack):
        head = frame.qualname.split(".", 1)[0]
        if head in _STAGES:
            return _STAGES[head]
        snap = _SNAPSHOT.match(frame.qualname)
        if snap is not None:
            return snap[2]
    return None


_SHELLS = ("PartitionedAgent.handle", "Sequencer.sequence")


def where(stack: list[Frame]) -> tuple[str, str]:
    """(where, what) of one stack: the level (or sequencer / runtime) and the step of the shell it is in."""
    for i, frame in enumerate(stack):
        if frame.qualname in _SHELLS:
            child = stack[i + 1] if i + 1 < len(stack) else None
            what = "(self)" if child is None else child.qualname if child.ours else child.func
            if frame.qualname.endswith("sequence"):
                return "sequencer", what
            return _level(stack[i:]) or "level (unknown: shared shell code)", what
    packages = [f.package for f in stack if f.package not in ("python", "ours")]
    if any(f.qualname.endswith("PartitionedAgent.run") for f in stack):
        return "level agents (batching)", packages[-1] if packages else "python"
    return "runtime", packages[-1] if packages else (stack[-1].func if stack else "?")


_WAITING = frozenset({"select", "poll", "epoll", "wait", "acquire"})


def waiting(stack: list[Frame]) -> bool:
    """A sample of a thread blocked in the event loop's selector (py-spy does not always call it idle)."""
    if not stack:
        return False
    leaf = stack[-1]
    return leaf.func.rsplit(".", 1)[-1] in _WAITING and leaf.package == "python"


@dataclass
class Profile:
    """Sample counts by self frame, inclusive frame and (where, what); waiting samples apart."""

    total: int = 0
    waiting: int = 0
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    places: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_place: Counter[str] = field(default_factory=Counter)


def aggregate(stacks: list[tuple[list[Frame], int]]) -> Profile:
    profile = Profile()
    for stack, count in stacks:
        if not stack:
            continue
        if waiting(stack):
            profile.waiting += count
            continue
        profile.total += count
        profile.self_time[stack[-1].short] += count
        for label in {f.short for f in stack}:
            profile.inclusive[label] += count
        place = where(stack)
        profile.places[place] += count
        profile.by_place[place[0]] += count
    return profile


def render(profile: Profile, top: int = 25, seconds: float | None = None, rate: int = 100) -> str:
    """A plain-text report: busy share, top self and inclusive frames, time per place."""
    total = max(profile.total, 1)
    lines = [f"busy samples: {profile.total} (and {profile.waiting} waiting in a selector, left out)"]
    if seconds:
        lines[0] += f"; over {seconds:.0f} s at {rate} Hz that is {total / (seconds * rate):.0%} of one thread"

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    lines += ["", "time by place (share of busy samples):"]
    lines += [f"  {pct(n)}  {place}" for place, n in profile.by_place.most_common()]
    lines += ["", f"top {top} (place, step):"]
    lines += [f"  {pct(n)}  {place} / {what}" for (place, what), n in profile.places.most_common(top)]
    lines += ["", f"top {top} self:"]
    lines += [f"  {pct(n)}  {label}" for label, n in profile.self_time.most_common(top)]
    lines += ["", f"top {top} inclusive:"]
    lines += [f"  {pct(n)}  {label}" for label, n in profile.inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


def summarize(path: Path, top: int = 25, seconds: float | None = None, rate: int = 100) -> str:
    return render(aggregate(parse_raw(path.read_text(errors="replace").splitlines())), top, seconds, rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=None, help="Recording duration (for the busy share).")
    parser.add_argument("--rate", type=int, default=100)
    args = parser.parse_args()
    print(summarize(args.raw, args.top, args.seconds, args.rate), end="")


if __name__ == "__main__":
    main()
