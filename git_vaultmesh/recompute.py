"""Releases' history trees and tree digests, computed at the same time: what record writes and verify checks.

Why together: the two are independent (one reads every commit, the other every object of one tree), each is
mostly git decompressing objects in its own processes, and machines have two cores or more. The parts run on
two workers (the caller's thread and one more; hashlib and pipe reads release the GIL), each taking the next
part not yet started: a verify of a release over a chain of base releases reads the long base history on
one while the other digests the release's tree and reads the short increments.

Why one pass: each history extends its base from the compact range the base's receipt records, so the parts
of a chain need no result of each other, and every commit of the chain is read once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .errors import VaultMeshError
from .evtag import Stopped, TreeDigest, tree_digest
from .git import Repo
from .history import Base, History, compute

_T = TypeVar("_T")


@dataclass(frozen=True)
class Recomputed:
    """Each part's value, or the VaultMeshError computing it raised (a failed part does not hide the other).

    Reading a part re-raises its error; reading a part that was not asked for is a programming error."""

    _history: History | VaultMeshError | None
    _digest: TreeDigest | VaultMeshError | None

    @property
    def history(self) -> History:
        return _value(self._history, "history")

    @property
    def digest(self) -> TreeDigest:
        return _value(self._digest, "digest")

    @property
    def history_error(self) -> VaultMeshError | None:
        return self._history if isinstance(self._history, VaultMeshError) else None

    @property
    def digest_error(self) -> VaultMeshError | None:
        return self._digest if isinstance(self._digest, VaultMeshError) else None


def _value(got: _T | VaultMeshError | None, what: str) -> _T:
    if got is None:
        raise RuntimeError(f"recompute was not asked for the {what}")
    if isinstance(got, VaultMeshError):
        raise got
    return got


@dataclass(frozen=True)
class Job:
    """What to recompute for one release commit (a full commit id): its history over `base` (history.compute)
    when `history`, its Git-EVTag-v0-SHA512 (evtag.tree_digest with the two submodule options) when `digest`.

    `commits` is how many commits the history adds over its base, when known (a receipt records it): the
    longest part starts first, so the two workers finish together."""

    commit: str
    base: Base | None = None
    history: bool = True
    digest: bool = True
    require_submodules: bool = False
    include_submodules: bool = True
    commits: int | None = None


def recompute_all(repo: Repo, jobs: Sequence[Job]) -> list[Recomputed]:
    """Every part of every job, at most two at a time; one Recomputed per job, in order.

    Only VaultMeshError is caught per part; anything else (a bug) propagates to the caller."""
    histories: dict[int, History | VaultMeshError] = {}
    digests: dict[int, TreeDigest | VaultMeshError] = {}
    parts: list[tuple[int, Callable[[Repo], None]]] = []  # (rough cost, the part run with a Repo)

    def history_part(k: int, job: Job) -> Callable[[Repo], None]:
        def run(own: Repo) -> None:
            try:
                histories[k] = compute(own, job.commit, job.base)
            except VaultMeshError as exc:
                histories[k] = exc
        return run

    def digest_part(k: int, job: Job) -> Callable[[Repo], None]:
        def run(own: Repo) -> None:
            try:
                digests[k] = tree_digest(own, job.commit, require_submodules=job.require_submodules,
                                         include_submodules=job.include_submodules)
            except VaultMeshError as exc:
                digests[k] = exc
        return run

    for k, job in enumerate(jobs):
        if job.history:
            # a digest costs about as much as reading ~50k commits (4.4k files, 42 MB); unknown: assume long
            parts.append((job.commits if job.commits is not None else 1 << 62, history_part(k, job)))
        if job.digest:
            parts.append((50_000, digest_part(k, job)))
    parts.sort(key=lambda p: -p[0])  # stable: equal costs keep the jobs' order
    queue = [run for _, run in reversed(parts)]  # popped from the end: longest first
    lock = threading.Lock()
    crashed: list[BaseException] = []  # a bug in the thread is re-raised here, not turned into "no result"

    def take() -> Callable[[Repo], None] | None:
        with lock:
            return queue.pop() if queue and not crashed else None

    def drain(own: Repo) -> None:
        while (run := take()) is not None:
            run(own)

    def worker() -> None:
        try:
            # its own Repo: the caller's long-lived cat-file must not be shared between threads
            with Repo(repo.git_dir, repo.work_tree) as own:
                drain(own)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            with lock:
                crashed.append(exc)

    thread: threading.Thread | None = None
    if len(parts) > 1:
        thread = threading.Thread(target=worker, name="recompute", daemon=True)
        thread.start()
    try:
        drain(repo)
    except BaseException:
        with lock:
            crashed.append(RuntimeError("stopped"))  # the worker takes no further part
        raise
    finally:
        if thread is not None:
            thread.join()
    if crashed:
        raise crashed[0]
    return [Recomputed(histories.get(k), digests.get(k)) for k in range(len(jobs))]


class DigestAhead:
    """A release's tree digest computed in a thread from the moment its commit is known, so what a command
    does meanwhile (record: read the ledger, the policy and the key, find the base release, read the new
    history) costs no wall time of its own: the digest is the longest part of an incremental record, and
    none of that work needs it. `result()` gives the digest or raises its error, at the point where the
    command would have computed it, so a command's refusals keep their order; `cancel()` (idempotent) stops
    it when the command refuses before needing it."""

    def __init__(self, repo: Repo, commit: str, *, require_submodules: bool = False,
                 include_submodules: bool = True) -> None:
        self._stop = threading.Event()
        self._got: TreeDigest | VaultMeshError | None = None
        self._crash: BaseException | None = None

        def work() -> None:
            try:
                with Repo(repo.git_dir, repo.work_tree) as own:  # the caller's cat-file stays the caller's
                    self._got = tree_digest(own, commit, require_submodules=require_submodules,
                                            include_submodules=include_submodules, stop=self._stop)
            except Stopped:
                pass
            except VaultMeshError as exc:
                self._got = exc
            except BaseException as exc:  # noqa: BLE001 - a bug: re-raised in the caller's thread by result()
                self._crash = exc

        self._thread = threading.Thread(target=work, name="tree digest", daemon=True)
        self._thread.start()

    def result(self) -> TreeDigest:
        self._thread.join()
        if self._crash is not None:
            raise self._crash
        return _value(self._got, "digest")

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()
