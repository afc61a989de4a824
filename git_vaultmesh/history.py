"""The history tree of a release: an RFC 6962 tree over the raw commit objects of its history.

Order "vaultmesh-topo-v1": the base release's leaves, then every commit reachable from the release and not
from the base, parents before children, ties broken by ascending commit id (Kahn's algorithm with a
min-heap). The order depends only on the commit graph, so any implementation reproduces it.
"""

from __future__ import annotations

import hashlib
import heapq
from array import array
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


class Commits:
    """The commits of a history as they arrive from git, stored compactly: a first record reads a million of
    them, and dicts of tuples of lists of bytes took ~700 bytes a commit (0.7 GB at 1M); this takes ~250.

    Position i (arrival order) has id `oids[i]` (lowercase hex bytes, the key of `index`), leaf hash
    `leaves[32*i:32*i+32]`, and `nparents[i]` parent lines ("parent <id>\\n") next in `parent_lines`."""

    __slots__ = ("index", "oids", "leaves", "parent_lines", "nparents", "idlen")

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}
        self.oids: list[bytes] = []
        self.leaves = bytearray()
        self.parent_lines: bytes | bytearray = bytearray()
        self.nparents = array("I")
        self.idlen = 0

    def __len__(self) -> int:
        return len(self.oids)

    def leaf_list(self, order: Iterable[int]) -> list[bytes]:
        leaves = bytes(self.leaves)
        return [leaves[32 * i:32 * i + 32] for i in order]


def parse_batch(stream: bytes) -> Commits:
    """The commits of raw `cat-file --batch` output of commits."""
    out = Commits()
    if _parse_into(stream, out) != len(stream):
        raise ValueError("truncated cat-file output")
    return _checked(out)


def parse_chunks(chunks: Iterable[bytes], progress: timings.Step | timings._Null = timings.NULL) -> Commits:
    """parse_batch over output arriving in pieces: parsing overlaps git producing the rest."""
    out = Commits()
    rest = b""
    for chunk in chunks:
        buf = rest + chunk if rest else chunk
        had = len(out.oids)
        rest = buf[_parse_into(buf, out):]
        progress.advance(len(out.oids) - had)
    if rest:
        raise ValueError("truncated cat-file output")
    return _checked(out)


def _checked(out: Commits) -> Commits:
    if len(out.index) != len(out.oids):
        raise ValueError("a commit came twice in cat-file output")
    out.parent_lines = bytes(out.parent_lines)  # its slices are then bytes, which `index` can look up
    return out


def _parse_into(stream: bytes, out: Commits) -> int:
    """Parse the complete records of `stream` into `out`; return how many bytes they took.

    Hot path (one pass per 100k commits): a commit object starts "tree <id>\\n" then one "parent <id>\\n"
    per parent (git fsck enforces that order), so parents are found at fixed offsets and copied as one run
    of lines, and the body is hashed through a memoryview instead of being copied."""
    pos, n = 0, len(stream)
    find, startswith = stream.find, stream.startswith
    view = memoryview(stream)
    leaf_prefix = hashlib.sha256(b"\x00")
    index, oids_append, leaves, parent_lines = out.index, out.oids.append, out.leaves, out.parent_lines
    if not isinstance(parent_lines, bytearray):
        raise ValueError("these commits are complete")
    nparents_append = out.nparents.append
    k = len(out.oids)
    idlen = out.idlen
    while pos < n:
        nl = find(b"\n", pos)
        if nl < 0:
            break
        sp1 = find(b" ", pos, nl)
        if not startswith(b" commit ", sp1):
            sp2 = find(b" ", sp1 + 1, nl)
            if sp1 < 0 or sp2 < 0:
                raise ValueError(f"unexpected cat-file header {stream[pos:nl]!r}")
            raise ValueError(f"{stream[pos:sp1].decode()} is a {stream[sp1 + 1:sp2].decode()}, not a commit")
        start = nl + 1
        end = start + int(stream[sp1 + 8:nl])
        if end + 1 > n:
            break  # the record's body (or its trailing newline) is still on its way
        oid = stream[pos:sp1]
        idlen = sp1 - pos
        if not startswith(b"tree ", start):
            raise ValueError(f"commit {oid.decode()} does not start with its tree")
        first = p = start + 6 + idlen
        step = 8 + idlen
        while startswith(b"parent ", p, end):
            p += step
        if p > first:
            parent_lines += view[first:p]
        nparents_append((p - first) // step)
        h = leaf_prefix.copy()
        h.update(view[start:end])
        leaves += h.digest()
        index[oid] = k
        oids_append(oid)
        k += 1
        pos = end + 1
    out.idlen = idlen
    return pos


def order(commits: Commits) -> list[int]:
    """Positions in vaultmesh-topo-v1 order (parents outside the set are already in the base): Kahn's
    algorithm, the ready commits in a min-heap of ids (lowercase hex bytes, so byte order is id order)."""
    n = len(commits)
    index_get, oids = commits.index.get, commits.oids
    lines, nparents, idlen = bytes(commits.parent_lines), commits.nparents, commits.idlen  # no copy if bytes
    step = 8 + idlen
    # in-set parents: each commit's count, and the edges as (parent, child) positions
    indegree = array("I", bytes(4 * n))
    edge_parent: array[int] = array("I")
    edge_child: array[int] = array("I")
    ep_append, ec_append = edge_parent.append, edge_child.append
    off = 7
    for i in range(n):
        k = nparents[i]
        while k:
            j = index_get(lines[off:off + idlen])
            if j is not None:
                ep_append(j)
                ec_append(i)
                indegree[i] += 1
            off += step
            k -= 1
    # children of each position, contiguous (children[first[i]:first[i + 1]])
    first = array("I", bytes(4 * (n + 1)))
    for j in edge_parent:
        first[j + 1] += 1
    total = 0
    for i in range(n + 1):
        total += first[i]
        first[i] = total
    fill = first[:n]
    children = array("I", bytes(4 * len(edge_parent)))
    for j, c in zip(edge_parent, edge_child):
        children[fill[j]] = c
        fill[j] += 1
    del edge_parent, edge_child, fill
    ready = [oids[i] for i in range(n) if not indegree[i]]
    heapq.heapify(ready)
    out: list[int] = []
    push, pop, append = heapq.heappush, heapq.heappop, out.append
    index = commits.index
    while ready:
        i = index[pop(ready)]
        append(i)
        for c in children[first[i]:first[i + 1]]:
            k = indegree[c] - 1
            indegree[c] = k
            if not k:
                push(ready, oids[c])
    return out


def ordered_leaves(commits: dict[bytes, tuple[list[bytes], bytes]]) -> list[bytes]:
    """Leaf values in vaultmesh-topo-v1 order, from commit id -> (parents, leaf): `order` on a plain mapping
    (ids: lowercase hex bytes of one length; what the property tests feed it)."""
    got = Commits()
    for oid, (parents, _) in commits.items():
        got.idlen = len(oid)
        got.index[oid] = len(got.oids)
        got.oids.append(oid)
        got.nparents.append(len(parents))
        got.parent_lines += b"".join(b"parent " + p + b"\n" for p in parents)
    return [commits[got.oids[i]][1] for i in order(got)]


def compute(repo: Repo, commit: str, base: Base | None) -> History:
    """The history tree of `commit`, extending `base` from its compact range (the base's history is not read)."""
    with timings.step("history", unit="commits") as progress:
        return _compute(repo, commit, base, progress)


def _compute(repo: Repo, commit: str, base: Base | None, progress: timings.Step | timings._Null) -> History:
    got = parse_chunks(repo.stream_commit_chunks(commit, [base.commit] if base else []), progress)
    positions = order(got)
    frontier = base.frontier.copy() if base else merkle.CompactRange.from_leaf_hashes([])
    consistency: list[bytes] = []
    if base is not None and base.size > 0:
        leaves = got.leaf_list(positions)
        consistency = merkle.consistency_proof_from_frontier(base.frontier, leaves)
        frontier.extend(leaves)
    else:  # a first release: the leaves go into the tree one by one, never all held at once
        whole = bytes(got.leaves)
        del got
        frontier.extend(whole[32 * i:32 * i + 32] for i in positions)
    return History(frontier.size, frontier.root(), frontier, base, consistency)


def leaves_of(repo: Repo, commit: str, base_commits: list[str]) -> list[bytes]:
    """Leaf hashes of the commits `commit` adds over `base_commits`, in order (for proofs)."""
    got = parse_chunks(repo.stream_commit_chunks(commit, base_commits))
    return got.leaf_list(order(got))
