"""history.ordered_leaves against the vaultmesh-topo-v1 definition (DESIGN §3) written the slow, obvious way:
at each step take the smallest commit id whose parents inside the set are all placed."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from git_vaultmesh.history import ordered_leaves


def by_definition(commits: dict[bytes, tuple[list[bytes], bytes]]) -> list[bytes]:
    placed: set[bytes] = set()
    out: list[bytes] = []
    while len(placed) < len(commits):
        ready = [oid for oid, (parents, _) in commits.items()
                 if oid not in placed and all(p in placed or p not in commits for p in parents)]
        oid = min(ready)
        placed.add(oid)
        out.append(commits[oid][1])
    return out


@st.composite
def histories(draw: st.DrawFn) -> dict[bytes, tuple[list[bytes], bytes]]:
    """A random DAG: each commit's parents are earlier commits (or commits outside the set, like a base's),
    ids random hex, so ties are broken by id in every shape: straight runs, forks, merges, octopuses."""
    n = draw(st.integers(min_value=0, max_value=40))
    ids = [hashlib.sha1(draw(st.binary(min_size=4, max_size=4)) + bytes([i])).hexdigest().encode() for i in range(n)]
    outside = [b"f" * 40, b"0" * 40]
    commits: dict[bytes, tuple[list[bytes], bytes]] = {}
    for i, oid in enumerate(ids):
        pool = ids[:i] + outside
        k = draw(st.integers(min_value=0, max_value=min(3, len(pool))))
        parents = draw(st.lists(st.sampled_from(pool), min_size=k, max_size=k, unique=True)) if k else []
        commits[oid] = (parents, hashlib.sha256(oid).digest())
    return commits


@settings(max_examples=400, deadline=None, derandomize=True)
@given(histories())
def test_ordered_leaves_is_topo_v1(commits: dict[bytes, tuple[list[bytes], bytes]]) -> None:
    assert ordered_leaves(commits) == by_definition(commits)


def test_straight_run_and_fork_tie_break() -> None:
    a, b, c, d = b"a" * 40, b"b" * 40, b"c" * 40, b"d" * 40
    # d is the root; c and b both follow d (a fork): b first (smaller id), then a follows b; c last.
    commits = {d: ([], b"D"), c: ([d], b"C"), b: ([d], b"B"), a: ([b], b"A")}
    assert ordered_leaves(commits) == [b"D", b"B", b"A", b"C"] == by_definition(commits)
