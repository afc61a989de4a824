"""The history tree of a release: an RFC 6962 tree over the raw commit objects of its history.

Order "vaultmesh-topo-v1": the base release's leaves, then every commit reachable from the release and not
from the base, parents before children, ties broken by ascending commit id (Kahn's algorithm with a
min-heap). The order depends only on the commit graph, so any implementation reproduces it.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from typing import Any

from . import merkle
from .git import Repo

ALG = "rfc6962-sha256"
ORDER = "vaultmesh-topo-v1"


@dataclass(frozen=True)
class Base:
    """The earlier release a history extends."""

    entry: str  # entry id of the base release
    commit: str
    size: int
    root: bytes
    frontier: merkle.CompactRange


@dataclass(frozen=True)
class History:
    size: int
    root: bytes
    frontier: merkle.CompactRange
    base: Base | None
    consistency: list[bytes]

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "alg": ALG, "order": ORDER, "size": self.size, "root": self.root.hex(),
            "frontier": [h.hex() for h in self.frontier.hashes],
        }
        if self.base is not None:
            d["base"] = {"entry": self.base.entry, "size": self.base.size, "root": self.base.root.hex()}
            d["consistency"] = [h.hex() for h in self.consistency]
        return d


def parse_batch(stream: bytes) -> dict[str, tuple[list[str], bytes]]:
    """commit id -> (parents, leaf hash) from raw `cat-file --batch` output of commits."""
    out: dict[str, tuple[list[str], bytes]] = {}
    pos, n = 0, len(stream)
    leaf_prefix = hashlib.sha256(b"\x00")
    while pos < n:
        nl = stream.index(b"\n", pos)
        oid_b, typ, size_b = stream[pos:nl].split(b" ")
        size = int(size_b)
        start = nl + 1
        body = stream[start:start + size]
        pos = start + size + 1
        if typ != b"commit":
            raise ValueError(f"{oid_b.decode()} is a {typ.decode()}, not a commit")
        parents = []
        hdr_end = body.find(b"\n\n")
        for line in body[: hdr_end if hdr_end >= 0 else len(body)].split(b"\n"):
            if line.startswith(b"parent "):
                parents.append(line[7:].decode())
        h = leaf_prefix.copy()
        h.update(body)
        out[oid_b.decode()] = (parents, h.digest())
    return out


def ordered_leaves(commits: dict[str, tuple[list[str], bytes]]) -> list[bytes]:
    """Leaf hashes in vaultmesh-topo-v1 order (parents outside the set are already in the base)."""
    children: dict[str, list[str]] = {}
    indegree: dict[str, int] = {}
    for oid, (parents, _) in commits.items():
        k = 0
        for p in parents:
            if p in commits:
                k += 1
                children.setdefault(p, []).append(oid)
        indegree[oid] = k
    ready = [oid for oid, k in indegree.items() if k == 0]
    heapq.heapify(ready)
    leaves: list[bytes] = []
    while ready:
        oid = heapq.heappop(ready)
        leaves.append(commits[oid][1])
        for c in children.get(oid, ()):
            indegree[c] -= 1
            if indegree[c] == 0:
                heapq.heappush(ready, c)
    return leaves


def compute(repo: Repo, commit: str, base: Base | None) -> History:
    """The history tree of `commit`, extending `base` from its compact range (the base's history is not read)."""
    stream = repo.stream_commits(commit, [base.commit] if base else [])
    leaves = ordered_leaves(parse_batch(stream))
    frontier = base.frontier.copy() if base else merkle.CompactRange.from_leaf_hashes([])
    consistency: list[bytes] = []
    if base is not None and base.size > 0:
        consistency = merkle.consistency_proof_from_frontier(base.frontier, leaves)
    frontier.extend(leaves)
    return History(frontier.size, frontier.root(), frontier, base, consistency)


def leaves_of(repo: Repo, commit: str, base_commits: list[str]) -> list[bytes]:
    """Leaf hashes of the commits `commit` adds over `base_commits`, in order (for proofs)."""
    return ordered_leaves(parse_batch(repo.stream_commits(commit, base_commits)))
