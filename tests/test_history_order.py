"""The parser builds the commit graph while commits arrive: whatever order git sends them in (children first,
as rev-list does, parents first, or shuffled), the order is vaultmesh-topo-v1 by its definition."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_history import by_definition, histories

from git_vaultmesh.history import ordered_leaves


@settings(max_examples=300, deadline=None, derandomize=True)
@given(histories(), st.sampled_from(["as built", "reversed", "shuffled"]), st.randoms(use_true_random=False))
def test_order_does_not_depend_on_arrival(commits: dict[bytes, tuple[list[bytes], bytes]], arrival: str,
                                          rnd: object) -> None:
    items = list(commits.items())
    if arrival == "reversed":
        items.reverse()
    elif arrival == "shuffled":
        rnd.shuffle(items)  # type: ignore[attr-defined]
    assert ordered_leaves(dict(items)) == by_definition(commits)
