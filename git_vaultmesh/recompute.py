"""A release's history tree and tree digest, computed at the same time: what record writes and verify checks.

Why together: the two are independent (one reads every commit, the other every object of one tree), each is
mostly git decompressing objects in its own processes, and machines have two cores or more. The tree digest
runs in a thread (hashlib and pipe reads release the GIL) while the history is parsed in the caller's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TypeVar

from .errors import VaultMeshError
from .evtag import TreeDigest, tree_digest
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


def recompute(
    repo: Repo, commit: str, base: Base | None, *, want_history: bool = True, want_digest: bool = True,
    require_submodules: bool = False, include_submodules: bool = True,
) -> Recomputed:
    """The history of `commit` over `base` (history.compute) and its Git-EVTag-v0-SHA512 (evtag.tree_digest,
    with the same two submodule options), concurrently when both are wanted.

    `commit` is a full commit id. Only VaultMeshError is caught per part; anything else propagates."""
    digest: list[TreeDigest | VaultMeshError] = []
    crashed: list[BaseException] = []  # a bug in the thread is re-raised here, not turned into "no digest"

    def run_digest() -> None:
        # its own Repo: the caller's long-lived cat-file must not be shared between threads
        with Repo(repo.git_dir, repo.work_tree) as own:
            try:
                digest.append(tree_digest(own, commit, require_submodules=require_submodules,
                                          include_submodules=include_submodules))
            except VaultMeshError as exc:
                digest.append(exc)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
                crashed.append(exc)

    worker: threading.Thread | None = None
    if want_digest and want_history:
        worker = threading.Thread(target=run_digest, name="tree digest", daemon=True)
        worker.start()
    hist: History | VaultMeshError | None = None
    try:
        if want_history:
            try:
                hist = compute(repo, commit, base)
            except VaultMeshError as exc:
                hist = exc
    finally:
        if worker is not None:
            worker.join()
    if want_digest and worker is None:
        run_digest()
    if crashed:
        raise crashed[0]
    return Recomputed(hist, digest[0] if digest else None)
