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
    """The commits of a history as they arrive from git, with their graph, stored compactly: a first record
    reads a million of them, and dicts of tuples of lists of bytes took ~650 bytes a commit; this takes ~250.

    Position i (arrival order) has id `oids[i]` (lowercase hex bytes, the key of `index`), leaf hash
    `leaves[32*i:32*i+32]`, `indegree[i]` parents in the set, and children `children[ends[i-1]:ends[i]]`
    plus `late.get(i, [])`.

    Why the graph is built while the commits arrive: rev-list sends children before their parents (by date;
    not guaranteed, hence `late`), so when a commit arrives its children are the ones `waiting` for it, and
    `waiting` only holds the walk's frontier. Building it there overlaps git producing the rest, where
    building it after the stream would add to the command's time."""

    __slots__ = ("index", "oids", "leaves", "indegree", "children", "ends", "waiting", "late")

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}
        self.oids: list[bytes] = []
        self.leaves = bytearray()
        self.indegree = array("I")
        self.children = array("I")
        self.ends = array("I")
        self.waiting: dict[bytes, list[int]] = {}  # a parent id not seen yet -> the children naming it
        self.late: dict[int, list[int]] = {}  # children that came after their parent

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
    """The stream is complete: a parent still waited for either came before its child (its children so far
    were taken when it came, so these are `late`), or never came: outside the set, in the base."""
    if len(out.index) != len(out.oids):
        raise ValueError("a commit came twice in cat-file output")
    index_get = out.index.get
    for parent, children in out.waiting.items():
        j = index_get(parent)
        if j is not None:
            out.late.setdefault(j, []).extend(children)
            for c in children:
                out.indegree[c] += 1
    out.waiting.clear()
    return out


def _parse_into(stream: bytes, out: Commits) -> int:
    """Parse the complete records of `stream` into `out`; return how many bytes they took.

    Hot path (one pass per 100k commits): a commit object starts "tree <id>\\n" then one "parent <id>\\n"
    per parent (git fsck enforces that order), so parents are read at fixed offsets, and the body is hashed
    through a memoryview instead of being copied."""
    pos, n = 0, len(stream)
    find, startswith = stream.find, stream.startswith
    view = memoryview(stream)
    leaf_prefix = hashlib.sha256(b"\x00")
    index, oids_append, leaves = out.index, out.oids.append, out.leaves
    indegree, indegree_append = out.indegree, out.indegree.append
    children_extend, ends_append = out.children.extend, out.ends.append
    waiting, waiting_get, waiting_pop = out.waiting, out.waiting.get, out.waiting.pop
    k = len(out.oids)
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
        p = start + 6 + idlen
        while startswith(b"parent ", p, end):
            # it comes later (or never: then it is in the base), or it came before (rare: see _checked)
            parent = stream[p + 7:p + 7 + idlen]
            w = waiting_get(parent)
            if w is None:
                waiting[parent] = [k]
            else:
                w.append(k)
            p += 8 + idlen
        mine = waiting_pop(oid, None)
        if mine is not None:
            children_extend(mine)
            for c in mine:
                indegree[c] += 1
        indegree_append(0)
        ends_append(len(out.children))
        h = leaf_prefix.copy()
        h.update(view[start:end])
        leaves += h.digest()
        index[oid] = k
        oids_append(oid)
        k += 1
        pos = end + 1
    return pos


def order(commits: Commits) -> list[int]:
    """Positions in vaultmesh-topo-v1 order (parents outside the set are already in the base): Kahn's
    algorithm, the ready commits in a min-heap of ids (lowercase hex bytes, so byte order is id order)."""
    oids, index, indegree = commits.oids, commits.index, array("I", commits.indegree)
    children, ends, late_get = commits.children, commits.ends, commits.late.get
    ready = [oids[i] for i, d in enumerate(indegree) if not d]
    heapq.heapify(ready)
    out: list[int] = []
    push, pop, append = heapq.heappush, heapq.heappop, out.append
    has_late = bool(commits.late)
    while ready:
        i = index[pop(ready)]
        append(i)
        for c in children[ends[i - 1] if i else 0:ends[i]]:
            k = indegree[c] - 1
            indegree[c] = k
            if not k:
                push(ready, oids[c])
        if has_late:
            for c in late_get(i, ()):
                k = indegree[c] - 1
                indegree[c] = k
                if not k:
                    push(ready, oids[c])
    return out


def ordered_leaves(commits: dict[bytes, tuple[list[bytes], bytes]]) -> list[bytes]:
    """Leaf values in vaultmesh-topo-v1 order, from commit id -> (parents, leaf), arriving in the mapping's
    order: the mapping is written out as `cat-file --batch` records and goes through the parser and `order`,
    exactly the path of a real history (ids: lowercase hex bytes of one length; what the property tests use)."""
    records = []
    for oid, (parents, _) in commits.items():
        body = b"tree " + b"0" * len(oid) + b"\n" + b"".join(b"parent " + p + b"\n" for p in parents) + b"\n"
        records.append(b"%s commit %d\n%s\n" % (oid, len(body), body))
    got = parse_batch(b"".join(records))
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
