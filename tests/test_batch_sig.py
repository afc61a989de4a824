"""Batch signatures: the statement a batch signature covers, rebuilt from one body and its inclusion proof."""

from __future__ import annotations

import pytest

from git_vaultmesh import merkle
from git_vaultmesh.entry import batch_statement, canonical, make_entry, parse_line, signed_message
from git_vaultmesh.errors import VaultMeshError

LOG = "0" * 32


def _bodies(n: int) -> list[dict[str, str]]:
    return [{"type": "decision", "log": LOG, "recorded_at": "2025-10-01T00:00:00Z", "title": f"d{i} é"}
            for i in range(n)]


def _batch(n: int) -> tuple[list, bytes]:
    bodies = _bodies(n)
    leaves = [merkle.leaf_hash(canonical(b)) for b in bodies]
    root = merkle.root_from_leaf_hashes(leaves)
    entries = []
    for i, b in enumerate(bodies):
        proof = [h.hex() for h in merkle.inclusion_proof(leaves, i)]
        sig = {"format": "openpgp", "signer": "A" * 40, "sig": "AAAA",
               "batch": {"size": n, "index": i, "proof": proof}}
        entries.append(parse_line(make_entry(b, [sig]).line))
    return entries, batch_statement(LOG, n, root)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 13])
def test_every_entry_of_a_batch_rebuilds_the_same_statement(n: int) -> None:
    entries, statement = _batch(n)
    for e in entries:
        assert signed_message(e.sigs[0], e) == statement


def test_plain_signature_covers_the_body() -> None:
    e = parse_line(make_entry(_bodies(1)[0], [{"format": "openpgp", "signer": "A" * 40, "sig": "AAAA"}]).line)
    assert signed_message(e.sigs[0], e) == e.body_bytes


def test_tampered_body_proof_or_index_changes_the_statement() -> None:
    entries, statement = _batch(5)
    e = entries[2]
    sig = e.sigs[0]
    other_body = make_entry({**e.body, "title": "changed"}, e.sigs)
    assert signed_message(sig, other_body) != statement
    bad_proof = {**sig, "batch": {**sig["batch"], "proof": ["00" * 32, *sig["batch"]["proof"][1:]]}}
    assert signed_message(bad_proof, e) != statement
    moved = {**sig, "batch": {**sig["batch"], "index": 3}}
    assert signed_message(moved, e) != statement
    short = {**sig, "batch": {**sig["batch"], "proof": sig["batch"]["proof"][:-1]}}
    with pytest.raises(VaultMeshError) as exc:
        signed_message(short, e)
    assert exc.value.code == "VM-SIG-MALFORMED"


@pytest.mark.parametrize("batch", [{"size": 0, "index": 0, "proof": []}, {"size": 2, "index": 2, "proof": []},
                                   {"size": 2, "index": 0, "proof": ["xy"]}, {"size": 1, "index": 0},
                                   {"size": True, "index": 0, "proof": []}])
def test_malformed_batch_field_is_refused_at_parse(batch: dict) -> None:
    sig = {"format": "openpgp", "signer": "A" * 40, "sig": "AAAA", "batch": batch}
    with pytest.raises(VaultMeshError) as exc:
        parse_line(make_entry(_bodies(1)[0], [sig]).line)
    assert exc.value.code == "VM-ENTRY-MALFORMED"


def test_formats_doc_vector() -> None:
    bodies = [{"type": "decision", "log": LOG, "recorded_at": "2025-10-01T00:00:00Z", "title": f"d{i}"}
              for i in range(3)]
    leaves = [merkle.leaf_hash(canonical(b)) for b in bodies]
    statement = batch_statement(LOG, 3, merkle.root_from_leaf_hashes(leaves)).decode()
    proof = merkle.inclusion_proof(leaves, 2)[0].hex()
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "formats.md").read_text(encoding="utf-8")
    assert statement in doc and proof in doc


def test_bulk_append_signs_once_and_verifies(ledger_repo, gpg_key) -> None:  # noqa: ANN001
    from git_vaultmesh import ledger
    from git_vaultmesh.git import Repo
    from git_vaultmesh.signing import resolve_signing_key
    from git_vaultmesh.verification import Options, verify

    repo = Repo.discover(ledger_repo)
    head, _ = ledger.load(repo)
    key = resolve_signing_key("openpgp", gpg_key.fingerprint)
    bodies = [{**b, "log": head.log_id} for b in _bodies(5)]
    res = ledger.append_bodies(repo, key, bodies)
    assert len(res.entries) == 5 and len({e.sigs[0]["sig"] for e in res.entries}) == 1
    report = verify(repo, Options(target=None, all=True, artifacts=(), trust_root=None, allow=frozenset(),
                                  remember=False, log_ref="refs/vaultmesh/log", subjects=True))
    assert report.ok, report.as_json()
    from git_vaultmesh.signing import PinnedKey, Verifier

    e = res.entries[3]
    sig = e.sigs[0]
    with Verifier([PinnedKey("openpgp", key.fingerprint, key.public_key)]) as v:
        assert v.verify("openpgp", sig["sig"], signed_message(sig, e)).status == "valid"
        changed = make_entry({**e.body, "title": "tampered"}, e.sigs)
        assert v.verify("openpgp", sig["sig"], signed_message(sig, changed)).status == "invalid"
        b = dict(sig["batch"])  # type: ignore[arg-type]
        for bad in ({**b, "index": 2}, {**b, "proof": ["11" * 32, *b["proof"][1:]]}):
            assert v.verify("openpgp", sig["sig"], signed_message({**sig, "batch": bad}, e)).status == "invalid"


def test_deploy_without_subject_verifies_and_doctor_is_clean(ledger_repo, gpg_key) -> None:  # noqa: ANN001
    """A deploy may omit `subject` (an artifact built elsewhere): verify and doctor must not report its
    absent commit as missing (they did: "recorded commit None is not in this repository")."""
    from git_vaultmesh import ledger
    from git_vaultmesh.git import Repo
    from git_vaultmesh.signing import resolve_signing_key
    from git_vaultmesh.verification import Options, doctor, verify

    repo = Repo.discover(ledger_repo)
    head, _ = ledger.load(repo)
    key = resolve_signing_key("openpgp", gpg_key.fingerprint)
    ledger.append_bodies(repo, key, [{"type": "deploy", "log": head.log_id, "recorded_at": "2025-10-01T00:00:00Z",
                                      "component": "web", "version": "v1", "environment": "prod"}])
    report = verify(repo, Options(target=None, all=True, artifacts=(), trust_root=None, allow=frozenset(),
                                  remember=False, log_ref="refs/vaultmesh/log", subjects=True))
    assert report.ok, report.as_json()
    assert doctor(repo).ok, doctor(repo).as_json()
    # a deploy that does carry a subject is still held to it
    ledger.append_bodies(repo, key, [{"type": "deploy", "log": head.log_id, "recorded_at": "2025-10-01T00:00:01Z",
                                      "component": "web", "version": "v2", "environment": "prod",
                                      "subject": {"commit": "1" * 40, "tree": "2" * 40}}])
    codes = {c.code for c in doctor(repo).checks if not c.ok}
    assert codes == {"VM-SUBJECT-MISSING"}, codes


def test_find_entries_reads_every_match_in_one_batch(ledger_repo, gpg_key) -> None:  # noqa: ANN001
    """find_entries (how record finds the policy and its base among every release) equals a scan of the whole
    log, and an entry whose object is gone is VM-LOG-CORRUPT, never silently skipped: `git grep` reports an
    unreadable blob on stderr only and exits 0 with the other matches (this test failed so before)."""
    import os

    import pytest

    from git_vaultmesh import ledger
    from git_vaultmesh.errors import VaultMeshError
    from git_vaultmesh.git import Repo
    from git_vaultmesh.signing import resolve_signing_key

    repo = Repo.discover(ledger_repo)
    head, _ = ledger.load(repo)
    key = resolve_signing_key("openpgp", gpg_key.fingerprint)
    ledger.append_bodies(repo, key, [{**b, "log": head.log_id} for b in _bodies(5)])
    head = ledger.read_head(repo)
    view = ledger.read_view(repo)
    scan = [(i, e) for i, e in enumerate(view.entries) if e is not None and e.type == "decision"]
    assert ledger.find_entries(repo, head, {"type": "decision"}) == scan and len(scan) == 5
    path = ledger.entry_path(scan[2][0])
    oid = repo.path_oid(str(head.commit), path)
    assert oid is not None
    loose = os.path.join(repo.git_dir, "objects", oid[:2], oid[2:])
    os.chmod(loose, 0o644)
    os.unlink(loose)
    fresh = Repo.discover(ledger_repo)
    with pytest.raises(VaultMeshError) as exc:
        ledger.find_entries(fresh, head, {"type": "decision"})
    assert exc.value.code in ("VM-LOG-CORRUPT",), exc.value
