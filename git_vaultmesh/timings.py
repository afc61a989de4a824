"""Per-step wall times (`--timings`, `VAULTMESH_TIMINGS=1`) and progress on a terminal for long steps.

    with timings.step("history", unit="commits") as s:
        for chunk in ...:
            s.advance(len(chunk))

Why one module for both: the steps worth timing are the ones that can take long (a first record over a
million commits), which are the ones a user wants to see moving. Disabled (no flag, stderr not a terminal)
`step` hands back one shared do-nothing object, so the cost in a hot path is a function call.

Steps may run in threads at the same time (history and the tree digest overlap): each is timed on its own,
a step entered twice adds up, and the progress line shows every running step.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import TracebackType
from typing import Any

PROGRESS_AFTER = 1.0  # seconds a step runs before its progress shows
_REFRESH = 0.1

_lock = threading.Lock()
_enabled = os.environ.get("VAULTMESH_TIMINGS", "") not in ("", "0")
_started = time.perf_counter()
_totals: dict[str, float] = {}
_running: list[Step] = []
_shown = False  # a progress line is on the terminal
_last_draw = 0.0


def enable(started: float | None = None) -> None:
    """Turn timings on; `total` counts from `started` (a perf_counter reading; default: now)."""
    global _enabled, _started
    if not _enabled or started is not None:
        _started = time.perf_counter() if started is None else started
    _enabled = True


def enabled() -> bool:
    return _enabled


def reset() -> None:
    with _lock:
        _totals.clear()


class _Null:
    """The step when neither timings nor progress are wanted."""

    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, n: int = 1) -> None:
        return None


NULL = _Null()


class Step:
    def __init__(self, name: str, unit: str, total: int | None, progress: bool) -> None:
        self.name, self.unit, self.total = name, unit, total
        self.done = 0
        self.progress = progress
        self.t0 = 0.0

    def __enter__(self) -> Step:
        self.t0 = time.perf_counter()
        if self.progress:
            with _lock:
                _running.append(self)
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        took = time.perf_counter() - self.t0
        with _lock:
            _totals[self.name] = _totals.get(self.name, 0.0) + took
            if self.progress:
                _running.remove(self)
                if _shown:
                    _draw()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.progress:
            now = time.perf_counter()
            if now - _last_draw >= _REFRESH and now - self.t0 >= PROGRESS_AFTER:
                with _lock:
                    _draw()


def _draw() -> None:
    """Redraw the one progress line, or clear it when no long step runs any more (caller holds the lock)."""
    global _shown, _last_draw
    _last_draw = time.perf_counter()
    parts = []
    for s in _running:
        if _last_draw - s.t0 >= PROGRESS_AFTER:
            of = f"/{s.total:,}" if s.total else ""
            parts.append(f"{s.name}: {s.done:,}{of} {s.unit}".rstrip())
    if parts:
        sys.stderr.write("\r\x1b[K" + "  ".join(parts))
    elif _shown:
        sys.stderr.write("\r\x1b[K")
    else:
        return
    sys.stderr.flush()
    _shown = bool(parts)


def _progress_wanted() -> bool:
    try:
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def step(name: str, unit: str = "", total: int | None = None) -> Step | _Null:
    """A timed step; `advance(n)` feeds its progress line (shown on a terminal once it runs over a second)."""
    progress = _progress_wanted()
    if not (_enabled or progress):
        return NULL
    return Step(name, unit, total, progress)


def report() -> dict[str, float]:
    """{"step": seconds} in the order the steps first finished, then "total" (since timings were turned on,
    or since start-up under VAULTMESH_TIMINGS): --json's "timings" object. Steps overlap (history and the
    tree digest run at once) and nest ("sign" inside "ledger append"), so they need not add up to the total."""
    with _lock:
        out = {k: round(v, 4) for k, v in _totals.items()}
    out["total"] = round(time.perf_counter() - _started, 4)
    return out


def peak_rss_mb() -> float | None:
    """This process's own peak resident memory (not git's: a `cat-file` over a large pack maps gigabytes of
    it, which is git's figure, the same as the floor's), None where the platform does not say."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1 << 20) if sys.platform == "darwin" else kb / 1024, 1)  # bytes on macOS, KiB elsewhere


def json_field() -> dict[str, Any]:
    """{"timings": report(), "peak_rss_mb": ...} when timings are on, else {}: to splice into a verb's --json."""
    return {"timings": report(), "peak_rss_mb": peak_rss_mb()} if _enabled else {}


def print_report() -> None:
    """The steps on stderr, one a line, if timings are on."""
    if not _enabled:
        return
    lines = [f"  {name:<14} {secs * 1000:9.1f} ms" for name, secs in report().items()]
    rss = peak_rss_mb()
    if rss is not None:
        lines.append(f"  {'peak RSS':<14} {rss:9.1f} MB (this process)")
    sys.stderr.write("timings:\n" + "\n".join(lines) + "\n")
