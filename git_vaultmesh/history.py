"""The history tree of a release: an RFC 6962 tree over the raw commit objects of its history.

Order "vaultmesh-topo-v1": the base release's leaves, then every commit reachable from the release and not
from the base, parents before children, ties broken by ascending commit id (Kahn's algorithm with a
min-heap). The order depends only on the commit graph, so any implementation reproduces it.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import merkle, timings
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


def parse_batch(stream: bytes) -> dict[bytes, tuple[list[bytes], bytes]]:
    """commit id -> (parents, leaf hash) from raw `cat-file --batch` output of commits (ids kept as bytes)."""
    out: dict[bytes, tuple[list[bytes], bytes]] = {}
    if _parse_into(stream, out) != len(stream):
        raise ValueError("truncated cat-file output")
    return out


def parse_chunks(
    chunks: Iterable[bytes], progress: timings.Step | timings._Null = timings.NULL,
) -> dict[bytes, tuple[list[bytes], bytes]]:
    """parse_batch over output arriving in pieces: parsing overlaps git producing the rest."""
    out: dict[bytes, tuple[list[bytes], bytes]] = {}
    rest = b""
    for chunk in chunks:
        buf = rest + chunk if rest else chunk
        had = len(out)
        rest = buf[_parse_into(buf, out):]
        progress.advance(len(out) - had)
    if rest:
        raise ValueError("truncated cat-file output")
    return out


def _parse_into(stream: bytes, out: dict[bytes, tuple[list[bytes], bytes]]) -> int:
    """Parse the complete records of `stream` into `out`; return how many bytes they took.

    Hot path (one pass per 100k commits): a commit object starts "tree <id>\n" then one "parent <id>\n"
    per parent (git fsck enforces that order), so parents are read at fixed offsets instead of splitting
    the header, and the body is hashed through a memoryview instead of being copied."""
    pos, n = 0, len(stream)
    find, startswith = stream.find, stream.startswith
    view = memoryview(stream)
    leaf_prefix = hashlib.sha256(b"\x00")
    while pos < n:
        nl = find(b"\n", pos)
        if nl < 0:
            break
        sp1 = find(b" ", pos, nl)
        sp2 = find(b" ", sp1 + 1, nl)
        if sp1 < 0 or sp2 < 0:
            raise ValueError(f"unexpected cat-file header {stream[pos:nl]!r}")
        oid = stream[pos:sp1]
        if stream[sp1 + 1:sp2] != b"commit":
            raise ValueError(f"{oid.decode()} is a {stream[sp1 + 1:sp2].decode()}, not a commit")
        start = nl + 1
        end = start + int(stream[sp2 + 1:nl])
        if end + 1 > n:
            break  # the record's body (or its trailing newline) is still on its way
        idlen = sp1 - pos
        if not startswith(b"tree ", start):
            raise ValueError(f"commit {oid.decode()} does not start with its tree")
        p = start + 6 + idlen
        parents = []
        while startswith(b"parent ", p, end):
            parents.append(stream[p + 7:p + 7 + idlen])
            p += 8 + idlen
        h = leaf_prefix.copy()
        h.update(view[start:end])
        out[oid] = (parents, h.digest())
        pos = end + 1
    return pos


def ordered_leaves(commits: dict[bytes, tuple[list[bytes], bytes]]) -> list[bytes]:
    """Leaf hashes in vaultmesh-topo-v1 order (parents outside the set are already in the base).

    Ids are lowercase hex bytes, so the min-heap's byte order is ascending commit id."""
    children: dict[bytes, list[bytes]] = {}
    indegree: dict[bytes, int] = {}
    for oid, (parents, _) in commits.items():
        k = 0
        for p in parents:
            if p in commits:
                k += 1
                if p in children:
                    children[p].append(oid)
                else:
                    children[p] = [oid]
        indegree[oid] = k
    ready = [oid for oid, k in indegree.items() if k == 0]
    heapq.heapify(ready)
    leaves: list[bytes] = []
    push, pop = heapq.heappush, heapq.heappop
    get_children = children.get
    while ready:
        oid = pop(ready)
        leaves.append(commits[oid][1])
        for c in get_children(oid, ()):
            k = indegree[c] - 1
            indegree[c] = k
            if k == 0:
                push(ready, c)
    return leaves


def compute(repo: Repo, commit: str, base: Base | None) -> History:
    """The history tree of `commit`, extending `base` from its compact range (the base's history is not read)."""
    with timings.step("history", unit="commits") as progress:
        return _compute(repo, commit, base, progress)


def _compute(repo: Repo, commit: str, base: Base | None, progress: timings.Step | timings._Null) -> History:
    leaves = ordered_leaves(parse_chunks(repo.stream_commit_chunks(commit, [base.commit] if base else []), progress))
    frontier = base.frontier.copy() if base else merkle.CompactRange.from_leaf_hashes([])
    consistency: list[bytes] = []
    if base is not None and base.size > 0:
        consistency = merkle.consistency_proof_from_frontier(base.frontier, leaves)
    frontier.extend(leaves)
    return History(frontier.size, frontier.root(), frontier, base, consistency)


def leaves_of(repo: Repo, commit: str, base_commits: list[str]) -> list[bytes]:
    """Leaf hashes of the commits `commit` adds over `base_commits`, in order (for proofs)."""
    return ordered_leaves(parse_chunks(repo.stream_commit_chunks(commit, base_commits)))
