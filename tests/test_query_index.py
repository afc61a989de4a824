"""The derived index against a brute-force scan of the log (hypothesis), and its upkeep: extended when the log
grows, rebuilt when it is rewritten, deleted or damaged; never used for another head.

The logs here are written with `git fast-import` (entries with placeholder signatures): the index reads entries,
it never judges signatures, and this keeps each example to milliseconds. The CLI tests (test_query_cli.py) use
real signed ledgers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from git_vaultmesh import index, ledger, merkle
from git_vaultmesh.entry import entry_path, make_entry
from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.git import Repo

LOG = "00112233445566778899aabbccddeeff"
SIG = [{"format": "openpgp", "signer": "A" * 40, "sig": "AAAA"}]
OTHER_SIG = [{"format": "openpgp", "signer": "B" * 40, "sig": "AAAA"}]


def write_log(path: Path, batches: list[list[dict[str, Any]]], *, fresh: bool = False, sigs: Any = None) -> str:
    """Append each batch of bodies as one log commit (on top of the current log unless `fresh`)."""
    repo = Repo.discover(path)
    parent = None if fresh else repo.ref_oid(ledger.REF_LOG)
    size = 0 if parent is None else len(repo.ls_tree(parent, "entries"))
    stream = [b"reset refs/vaultmesh/log\n"] if parent is None else []
    for n, batch in enumerate(batches):
        stream.append(b"commit refs/vaultmesh/log\ncommitter T <t@example.org> 1700000000 +0000\ndata 4\nlog\n")
        if n == 0 and parent is not None:
            stream.append(b"from %s\n" % parent.encode())
        for b in batch:
            data = make_entry(b, sigs(size) if sigs else SIG).line + b"\n"
            stream.append(b"M 100644 inline %s\ndata %d\n%s\n" % (entry_path(size).encode(), len(data), data))
            size += 1
        stream.append(b"M 100644 inline checkpoint\ndata 2\nx\n\n")
    subprocess.run(["git", "fast-import", "--quiet", "--force"], cwd=path, input=b"".join(stream), check=True)
    head = repo.ref_oid(ledger.REF_LOG)
    assert head is not None
    return head


def body(i: int, typ: str = "deploy", **kw: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"type": typ, "log": LOG, "recorded_at": f"2025-10-{1 + i % 28:02d}T{i % 24:02d}:00:00Z"}
    b.update(kw)
    return b


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    path = tmp_path / "r"
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


# --- the brute force: written from docs/query.md, not from index.py ------------------------------------------

def fields(b: dict[str, Any]) -> list[str]:
    out = [b[k] for k in ("component", "version", "message", "title", "environment", "status", "document")
           if isinstance(b.get(k), str)]
    out += list(b.get("evidence") or [])
    if isinstance(b.get("subject"), dict) and "ref" in b["subject"]:
        out.append(b["subject"]["ref"])
    return [f.casefold() for f in out]


def brute(path: Path, q: index.Query) -> list[int]:
    view = ledger.read_view(Repo.discover(path))
    seqs = []
    for seq, e in enumerate(view.entries):
        if e is None:
            continue
        b, fs = e.body, fields(e.body)
        if not all(any(t in f for f in fs) for t in q.terms):
            continue
        if any(any(t in f for f in fs) for t in q.excluded):
            continue
        if q.types and e.type not in q.types:
            continue
        if q.component is not None and b.get("component") != q.component:
            continue
        if q.environment is not None and b.get("environment") != q.environment:
            continue
        if q.signer is not None and q.signer not in [s["signer"] for s in e.sigs]:
            continue
        if q.since is not None and b["recorded_at"] < q.since:
            continue
        if q.until is not None and b["recorded_at"] > q.until:
            continue
        seqs.append(seq)
    if q.newest_first:
        seqs.reverse()
    return seqs if q.limit is None else seqs[: q.limit]


def found(path: Path, q: index.Query) -> tuple[list[int], index.Index]:
    repo = Repo.discover(path)
    ix = index.open_index(repo)
    try:
        return [h.seq for h in ix.search(q)], ix
    finally:
        ix.close()
        repo.close()


WORDS = ["postgres", "Postgres 16", "shop", "café", "ÉCOLE", "straße", "deploy", "prod", "db", "x", "日本語", "ǅ"]
text = st.lists(st.sampled_from(WORDS), min_size=0, max_size=3).map(" ".join)
bodies = st.lists(st.builds(
    lambda i, typ, comp, msg, env, ev, title: body(i, typ, component=comp, message=msg,
                                                  **({"environment": env} if typ == "deploy" else {}),
                                                  **({"title": title} if typ in ("adr", "decision") else {}),
                                                  **({"evidence": ev} if ev else {})),
    st.integers(0, 500), st.sampled_from(["deploy", "adr", "decision", "import"]),
    st.sampled_from(["shop", "db", "Café", "postgres"]), text, st.sampled_from(["prod", "staging"]),
    st.lists(text, max_size=2), text,
), min_size=0, max_size=12)
terms = st.lists(st.sampled_from(["postgres", "POSTGRES", "café", "CAFÉ", "strasse", "db", "x", "日本", "ǆ",
                                  "shop deploy", "prod", "o", "zzz"]), max_size=2)
queries = st.builds(
    index.Query, terms=terms.map(lambda ts: [t.casefold() for t in ts]),
    excluded=st.lists(st.sampled_from(["staging", "shop", "é"]), max_size=1),
    types=st.lists(st.sampled_from(["deploy", "adr", "decision"]), max_size=2, unique=True),
    component=st.none() | st.sampled_from(["shop", "Café"]), environment=st.none() | st.just("prod"),
    signer=st.none() | st.sampled_from(["A" * 40, "B" * 40]),
    since=st.none() | st.sampled_from(["2025-10-05T00:00:00Z", "2025-10-20T12:00:00Z"]),
    until=st.none() | st.sampled_from(["2025-10-10T23:59:59Z", "2025-10-28T00:00:00Z"]),
    limit=st.none() | st.integers(0, 5), newest_first=st.booleans(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(bodies, min_size=1, max_size=3), q=queries, fresh=st.booleans())
def test_index_equals_brute_force(bare: Path, batches: list[list[dict[str, Any]]], q: index.Query,
                                  fresh: bool) -> None:
    """Whatever the index did to get here (first build, extension, rebuild after a rewrite), its answers are
    those of a scan of the log."""
    write_log(bare, batches, fresh=fresh or Repo.discover(bare).ref_oid(ledger.REF_LOG) is None,
              sigs=lambda seq: SIG if seq % 3 else OTHER_SIG)
    got, _ = found(bare, q)
    assert got == brute(bare, q)


def test_extends_with_only_new_entries_and_rebuilds_on_rewrite(bare: Path) -> None:
    write_log(bare, [[body(i, component="shop") for i in range(5)]])
    q = index.Query(terms=["shop"])
    got, ix = found(bare, q)
    assert got == [4, 3, 2, 1, 0] and ix.rebuilt
    got, ix = found(bare, q)
    assert not ix.rebuilt and ix.extended == 0  # fresh: used as is
    write_log(bare, [[body(5, component="shop")], [body(6, component="db")]])
    got, ix = found(bare, q)
    assert got == [5, 4, 3, 2, 1, 0] and ix.extended == 2 and not ix.rebuilt
    # rewritten: a new log of other entries (not a descendant of the indexed head)
    head = write_log(bare, [[body(0, component="db"), body(1, component="shop")]], fresh=True)
    got, ix = found(bare, q)
    assert got == [1] and ix.rebuilt and ix.head == head and ix.size == 2


def test_an_old_entry_changed_in_a_descendant_forces_a_rebuild(bare: Path) -> None:
    """A commit that extends the indexed one but modifies an old entry (not append-only) is re-read in full."""
    write_log(bare, [[body(0, component="shop"), body(1, component="shop")]])
    found(bare, index.Query())
    repo = Repo.discover(bare)
    parent = repo.ref_oid(ledger.REF_LOG)
    data = make_entry(body(0, component="db"), SIG).line + b"\n"
    stream = (b"commit refs/vaultmesh/log\ncommitter T <t@example.org> 1700000000 +0000\ndata 4\nlog\n"
              b"from %s\nM 100644 inline %s\ndata %d\n%s\n" % (str(parent).encode(), entry_path(0).encode(),
                                                               len(data), data))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=bare, input=stream, check=True)
    got, ix = found(bare, index.Query(terms=["shop"]))
    assert got == [1] and ix.rebuilt


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate", "other-schema", "other-head"])
def test_damaged_or_foreign_index_is_rebuilt_silently(bare: Path, damage: str) -> None:
    write_log(bare, [[body(i, component="shop" if i % 2 else "db") for i in range(40)]])
    q = index.Query(terms=["shop"], limit=7)
    want, _ = found(bare, q)
    path = index.path_for(Repo.discover(bare))
    if damage == "delete":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"not a database at all" * 100)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:3000])
    else:
        import sqlite3

        db = sqlite3.connect(path)
        if damage == "other-schema":
            db.execute("UPDATE meta SET value = '999' WHERE key = 'schema'")
        else:  # an index that claims another log head: never used, rebuilt from the log
            db.execute("UPDATE meta SET value = ? WHERE key = 'head'", ("1" * 40,))
            db.execute("DELETE FROM entries WHERE seq = 39")
        db.commit()
        db.close()
    got, ix = found(bare, q)
    assert got == want == brute(bare, q)
    assert ix.rebuilt


def test_unreadable_entries_are_left_out_and_counted(bare: Path) -> None:
    write_log(bare, [[body(0, component="shop")]])
    repo = Repo.discover(bare)
    parent = repo.ref_oid(ledger.REF_LOG)
    bad = b'{"not":"an entry"}\n'
    stream = (b"commit refs/vaultmesh/log\ncommitter T <t@example.org> 1700000000 +0000\ndata 4\nlog\n"
              b"from %s\nM 100644 inline %s\ndata %d\n%s\n" % (str(parent).encode(), entry_path(1).encode(),
                                                               len(bad), bad))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=bare, input=stream, check=True)
    got, ix = found(bare, index.Query())
    assert got == [0] and ix.size == 2 and ix.skipped == 1


def test_unwritable_index_place_answers_from_memory(bare: Path) -> None:
    """Where the index cannot be written (here <git dir>/vaultmesh is a file; a read-only clone is the same), the
    answer comes from an index built in memory for this one run."""
    write_log(bare, [[body(0, component="shop")]])
    (bare / "vaultmesh").write_text("in the way\n")
    got, ix = found(bare, index.Query(terms=["shop"]))
    assert got == [0] and ix.rebuilt
    assert (bare / "vaultmesh").read_text() == "in the way\n"


def test_no_log_is_not_initialized(bare: Path) -> None:
    with pytest.raises(VaultMeshError) as exc:
        index.open_index(Repo.discover(bare))
    assert exc.value.code == "VM-NOT-INITIALIZED"


@pytest.mark.parametrize("pattern", ['"unbalanced', 'in"side', "\"tab\there\"", "bell\x07", '""', '-""'])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(VaultMeshError) as exc:
        index.parse_pattern(pattern)
    assert exc.value.code == "VM-QUERY-INVALID"


def test_pattern_words_phrases_and_exclusions() -> None:
    assert index.parse_pattern('Postgres "Major Upgrade" -staging - x') == (
        ["postgres", "major upgrade", "-", "x"], ["staging"])
    assert index.parse_pattern("") == ([], [])


@pytest.mark.parametrize("text", ["2025-13-01", "2025-02-30", "yesterday", "2025-10-01T25:00:00Z", "2025-1-1",
                                  "2025-10-01T10:00:00+02:00"])
def test_bad_dates(text: str) -> None:
    with pytest.raises(VaultMeshError) as exc:
        index.parse_date(text, end=False, what="--since")
    assert exc.value.code == "VM-QUERY-INVALID"


def test_dates_bound_whole_days() -> None:
    assert index.parse_date("2025-10-01", end=False, what="") == "2025-10-01T00:00:00Z"
    assert index.parse_date("2025-10-01", end=True, what="") == "2025-10-01T23:59:59Z"
    assert index.parse_date("2025-10-01T10:00:00Z", end=True, what="") == "2025-10-01T10:00:00Z"


@given(st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=70))
def test_all_inclusion_proofs_at_once_equal_one_at_a_time(data: list[bytes]) -> None:
    leaves = [merkle.leaf_hash(d) for d in data]
    proofs = merkle.inclusion_proofs(leaves)
    root = merkle.root_from_leaf_hashes(leaves)
    assert proofs == [merkle.inclusion_proof(leaves, i) for i in range(len(leaves))]
    assert all(merkle.verify_inclusion(i, len(leaves), leaves[i], p, root) for i, p in enumerate(proofs))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(alphabet=st.characters(max_codepoint=0x7F)) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_the_fast_canonical_check_never_accepts_what_rfc8785_would_not(value: Any) -> None:
    """entry.parse_line skips rfc8785 when the C encoder reproduces an ASCII line: it must only ever say yes when
    the line is exactly JCS, and say yes for every ASCII JCS line (else it saves nothing)."""
    import json

    from git_vaultmesh.entry import _plainly_canonical, canonical

    jcs = canonical(value)
    candidates = {jcs, json.dumps(value, sort_keys=True, separators=(",", ":")).encode(errors="surrogatepass"),
                  json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
                  .encode(errors="surrogatepass"), json.dumps(value).encode(errors="surrogatepass")}
    for line in candidates:
        if _plainly_canonical(value, line):
            assert line == jcs
    assert _plainly_canonical(value, jcs) == jcs.isascii()
