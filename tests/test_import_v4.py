"""import-v4: every fixture of the old VaultMesh v4.1 layout (tests/vectors/v4) imported through the real CLI into
a real ledger, its verdict asserted item by item; a second import appends nothing; neighbouring .asc/.tsr files
that are empty, HTML or a real RFC 3161 response; malformed receipts refused with their codes, nothing appended.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from git_vaultmesh.commands import import_v4
from git_vaultmesh.errors import VaultMeshError

from cli_helpers import assert_error, ledger_refs, ok, ok_json, run
from conftest import ROOT, git

FIXTURES = ROOT / "tests" / "vectors" / "v4"
APP = "ops/receipts/deploy/example-app-v2.0.0.receipt"
SERVICE = "ops/receipts/deploy/example-service-v1.4.json"
ADR = "ops/receipts/adr/ADR-001-example-decision.md"


def statuses(items: list[dict[str, str]]) -> dict[str, str]:
    """item -> status (each item appears once per receipt in these fixtures)."""
    out: dict[str, str] = {}
    for it in items:
        assert set(it) == {"item", "status", "detail"} and it["detail"], it
        assert it["item"] not in out, items
        out[it["item"]] = it["status"]
    return out


def imports(repo: Path) -> list[dict[str, Any]]:
    return [e["entry"] for e in ok_json(repo, "log") if e["entry"]["body"]["type"] == "import"]


def copy_tree(tmp_path: Path) -> Path:
    dst = tmp_path / "v4tree"
    shutil.copytree(FIXTURES, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def test_every_fixture_imported_with_its_verdict_and_reimport_appends_nothing(ledger_repo: Path) -> None:
    out = ok_json(ledger_repo, "import-v4", str(FIXTURES))
    assert out["ok"] and out["appended"] == 3 and out["already_imported"] == 0
    rows = {r["path"]: r for r in out["receipts"]}
    assert set(rows) == {APP, SERVICE, ADR}
    assert all(r["status"] == "imported" and len(r["entry"]) == 64 for r in rows.values())
    assert {rows[APP]["shape"], rows[SERVICE]["shape"], rows[ADR]["shape"]} == {
        "yaml-front-matter", "json", "adr-markdown"}
    assert rows[APP]["kind"] == "deployment" and rows[ADR]["kind"] == "adr"
    assert rows[SERVICE]["kind"] == "deploy"  # no type of its own: the directory the old tool kept it in

    # the YAML front-matter deploy receipt: its time, status and self-verification are claims; no artifact,
    # no signature, no token exist beside it
    assert statuses(rows[APP]["verified"]) == {"original": "kept"}
    assert statuses(rows[APP]["unverified"]) == {
        "timestamp": "claimed", "status": "claimed", "verified_by": "claimed", "artifact": "missing",
        "signature": "missing", "token": "missing"}
    # the JSON receipt: "2025-01-XX" is no time; the image digest is not checkable here; unknown keys named
    assert statuses(rows[SERVICE]["verified"]) == {"original": "kept"}
    svc = statuses(rows[SERVICE]["unverified"])
    assert svc == {"timestamp": "malformed", "status": "claimed", "digest": "claimed", "fields": "not-interpreted",
                   "signature": "missing", "token": "missing"}
    fields_note = next(u for u in rows[SERVICE]["unverified"] if u["item"] == "fields")["detail"]
    assert "covenant_seals" in fields_note and "proof_chain" in fields_note and "image" not in fields_note
    assert "2025-01-XX" in next(u for u in rows[SERVICE]["unverified"] if u["item"] == "timestamp")["detail"]
    # the ADR: its date and status are the author's word
    assert statuses(rows[ADR]["unverified"]) == {"date": "claimed", "status": "claimed", "signature": "missing",
                                                 "token": "missing"}

    # the entries: type import, the original bytes and digest exactly, the verdict as printed
    entries = {e["body"]["source"]["path"]: e for e in imports(ledger_repo)}
    assert set(entries) == {APP, SERVICE, ADR}
    for rel, e in entries.items():
        body = e["body"]
        raw = (FIXTURES / rel).read_bytes()
        assert base64.b64decode(body["original"]["bytes"]) == raw
        assert body["original"]["sha256"] == hashlib.sha256(raw).hexdigest() == rows[rel]["sha256"]
        assert body["original"]["size"] == len(raw)
        assert body["source"]["tool"] == "vaultmesh-v4.1"
        assert body["verified"] == rows[rel]["verified"] and body["unverified"] == rows[rel]["unverified"]
        assert "unverified" in body["message"] and "subject" not in body and "artifacts" not in body
    app = entries[APP]["body"]
    assert (app["component"], app["version"]) == ("example-app", "v2.0.0")
    assert app["original"]["fields"]["evidence"]["sha256"].startswith("4f1c0a6f")
    assert entries[SERVICE]["body"]["original"]["fields"]["covenant_seals"] == [1, 2]
    assert "component" not in entries[ADR]["body"]
    assert "ADR-001: Example decision" in entries[ADR]["body"]["message"]
    # one batch signature over the three, by the importer's key; the ledger still verifies
    sigs = [e["sigs"] for e in entries.values()]
    assert all(len(s) == 1 and s[0]["batch"]["size"] == 3 for s in sigs)
    assert ok_json(ledger_repo, "verify", "--all")["ok"] is True

    before = ledger_refs(ledger_repo)
    again = ok_json(ledger_repo, "import-v4", str(FIXTURES / "ops" / "receipts"))  # another PATH, same tree
    assert again["appended"] == 0 and again["already_imported"] == 3 and again["commit"] is None
    assert {r["status"] for r in again["receipts"]} == {"already-imported"}
    assert {r["entry"] for r in again["receipts"]} == {r["entry"] for r in rows.values()}
    assert ledger_refs(ledger_repo) == before
    text = ok(ledger_repo, "import-v4", str(FIXTURES / APP))
    assert "already imported as entry #" in text and "appended 0" in text
    assert ledger_refs(ledger_repo) == before


def test_dry_run_appends_nothing_and_needs_no_key(ledger_repo: Path) -> None:
    before = ledger_refs(ledger_repo)
    git(ledger_repo, "config", "vaultmesh.signingKey", "0" * 40)  # a key nobody holds: never asked for
    out = ok_json(ledger_repo, "import-v4", "--dry-run", str(FIXTURES))
    assert out["dry_run"] is True and out["appended"] == 0
    assert {r["status"] for r in out["receipts"]} == {"would-import"}
    assert ledger_refs(ledger_repo) == before
    assert out["unverified"]["signature missing"] == 3 and out["unverified"]["timestamp malformed"] == 1
    assert out["unverified"]["fields not-interpreted"] == 1
    text = ok(ledger_repo, "import-v4", "--dry-run", str(FIXTURES))
    assert "not verified, over 3 receipt(s): signature missing 3, status claimed 3, token missing 3," in text
    assert "would import" in text and "UNVERIFIED  timestamp (malformed)" in text and "would append 3" in text


def _token(data: bytes) -> bytes:
    from git_vaultmesh.rfc3161 import tsa
    from git_vaultmesh.rfc3161.server import make_identity, sign_token

    request, _nonce = tsa.build_request(data)
    return sign_token(make_identity("ec"), request)


def test_neighbour_files_artifact_and_a_token_that_appears_later(ledger_repo: Path, tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    (tree / "dist").mkdir()
    artifact = b"the release tarball\n"
    (tree / "dist" / "app-3.0.tar.gz").write_bytes(artifact)
    digest = hashlib.sha256(artifact).hexdigest()
    receipt = tree / "ops/receipts/deploy/app-v3.0.receipt"
    receipt.write_text(f"---\ntype: deployment\ncomponent: app\nversion: v3.0\ntimestamp: 2025-10-02T08:00:00Z\n"
                       f"evidence:\n  artifact: dist/app-3.0.tar.gz\n  sha256: {digest}\nstatus: active\n---\n")
    (tree / "dist" / "app-3.0.tar.gz.asc").write_bytes(b"")  # the old tool's gpg failed: empty file
    (tree / "dist" / "app-3.0.tar.gz.tsr").write_bytes(b"<html><body>502 Bad Gateway</body></html>\n")
    # the app fixture's artifact is there but with other bytes than it claims
    (tree / "dist" / "example-app-2.0.0.tar.gz").write_bytes(b"not the bytes the receipt names\n")
    # a real RFC 3161 response over the JSON receipt itself, and a signature file that is no signature
    (tree / f"{SERVICE}.tsr").write_bytes(_token((tree / SERVICE).read_bytes()))
    (tree / f"{SERVICE}.asc").write_text("this is not a signature\n")
    (tree / "ops/receipts/deploy/notes.txt").write_text("a stray file\n")

    out = ok_json(ledger_repo, "import-v4", str(tree))
    rows = {r["path"]: r for r in out["receipts"]}
    assert out["appended"] == 4 and out["skipped"] == ["ops/receipts/deploy/notes.txt"]
    new = rows["ops/receipts/deploy/app-v3.0.receipt"]
    assert statuses(new["verified"]) == {"original": "kept", "artifact": "matches"}
    un = statuses(new["unverified"])
    assert un["signature"] == "empty" and un["token"] == "not-a-token"
    assert "VM-TSA-NOT-DER" in next(u for u in new["unverified"] if u["item"] == "token")["detail"]
    assert statuses(rows[APP]["unverified"])["artifact"] == "mismatch"
    svc = statuses(rows[SERVICE]["unverified"])
    assert svc["token"] == "not-checked" and svc["signature"] == "not-a-signature"
    tok = next(u for u in rows[SERVICE]["unverified"] if u["item"] == "token")["detail"]
    assert "imprint equals the receipt's sha256" in tok and "not checked" in tok
    # the neighbour files travel inside the entry, byte for byte
    body = next(e["body"] for e in imports(ledger_repo) if e["body"]["source"]["path"] == SERVICE)
    files = {f["path"]: f for f in body["original"]["files"]}
    assert base64.b64decode(files[f"{SERVICE}.tsr"]["bytes"]) == (tree / f"{SERVICE}.tsr").read_bytes()
    assert files[f"{SERVICE}.asc"]["role"] == "signature" and files[f"{SERVICE}.tsr"]["role"] == "token"

    # a token that appears beside a receipt already imported makes it new evidence: imported again, once
    (tree / f"{ADR}.tsr").write_bytes(_token((tree / ADR).read_bytes()))
    again = ok_json(ledger_repo, "import-v4", str(tree))
    assert again["appended"] == 1
    assert [r["path"] for r in again["receipts"] if r["status"] == "imported"] == [ADR]
    assert ok_json(ledger_repo, "import-v4", str(tree))["appended"] == 0


def test_paths_outside_the_tree_are_never_read(ledger_repo: Path, tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-7f3a\n")
    (tmp_path / "secret.txt.asc").write_text("-----BEGIN PGP SIGNATURE-----\nTOPSECRET-7f3a\n")
    (tree / "ops/receipts/deploy/evil.receipt").write_text(
        "---\ntype: deployment\ncomponent: x\nversion: '1'\ntimestamp: 2025-10-02T08:00:00Z\nevidence:\n"
        f"  artifact: ../secret.txt\n  sha256: {hashlib.sha256(b'TOPSECRET-7f3a' + bytes([10])).hexdigest()}\n---\n")
    (tree / "ops/receipts/deploy/abs.json").write_text(json.dumps({"component": "y", "version": "1",
                                                                   "artifact": str(secret)}))
    out = ok_json(ledger_repo, "import-v4", str(tree))
    rows = {r["path"]: r for r in out["receipts"]}
    for rel in ("ops/receipts/deploy/evil.receipt", "ops/receipts/deploy/abs.json"):
        assert statuses(rows[rel]["unverified"])["artifact"] == "not-read"
        assert "artifact" not in statuses(rows[rel]["verified"])
    dumped = json.dumps(imports(ledger_repo))
    assert "TOPSECRET" not in dumped and base64.b64encode(b"TOPSECRET").decode()[:8] not in dumped
    assert all("files" not in e["body"]["original"] for e in imports(ledger_repo)
               if e["body"]["source"]["path"] in rows and "evil" in e["body"]["source"]["path"])


@pytest.mark.parametrize("name, content, cause", [
    ("deploy/open.receipt", b"---\ntype: deployment\ncomponent: a\n", "never closed"),
    ("deploy/dup.receipt", b"---\ncomponent: a\ncomponent: b\n---\n", "twice (line 3)"),
    ("deploy/bad.receipt", b"---\na: [1\n---\n", "not valid YAML"),
    ("deploy/alias.receipt", b"---\na: &x 1\nb: *x\n---\n", "anchor or alias"),
    ("deploy/tag.receipt", b"---\na: !!python/object:os.system x\n---\n", "explicit YAML tag"),
    ("deploy/list.receipt", b"---\n- a\n- b\n---\n", "must be a mapping"),
    ("deploy/empty.receipt", b"---\n---\n", "empty"),
    ("deploy/dup.json", b'{"component": "a", "component": "b"}', "duplicate key"),
    ("deploy/nan.json", b'{"component": NaN}', "not valid JSON"),
    ("deploy/array.json", b"[1, 2]", "must be an object"),
    ("deploy/latin1.json", b'{"component": "caf\xe9"}', "not UTF-8"),
    ("deploy/bom.receipt", b"\xef\xbb\xbf---\na: b\n---\n", "byte order mark"),
    ("deploy/neither.receipt", b"component: a\n", "neither YAML front matter"),
    ("adr/ADR-002.md", b"no title line\n\nDate: 2025-10-01\n", "'# title'"),
    ("adr/ADR-003.md", b"# ADR-003: x\n\nDate: 2025-10-01\nDate: 2025-10-02\n", "given twice"),
    ("deploy/deep.json", b"[" * 40 + b"]" * 40, "must be an object"),
    ("deploy/deep2.json", b'{"a":' * 40 + b"1" + b"}" * 40, "deeper than"),
])
def test_parse_refuses_malformed_receipts(name: str, content: bytes, cause: str) -> None:
    with pytest.raises(VaultMeshError) as exc:
        import_v4.parse(f"ops/receipts/{name}", content)
    assert exc.value.code == "VM-IMPORT-MALFORMED"
    assert cause in exc.value.cause and exc.value.cause.startswith(f"ops/receipts/{name}: ")


def test_parse_keeps_values_as_written() -> None:
    p = import_v4.parse("ops/receipts/deploy/x.json", b'{"score": 9.50, "big": 12345678901234567890, "n": 3}')
    assert p.fields == {"score": "9.50", "big": "12345678901234567890", "n": 3}  # floats and huge ints: text
    y = import_v4.parse("ops/receipts/deploy/x.receipt", b"---\nversion: 1.10\ntimestamp: 2025-01-XX\nok: yes\n---\n")
    assert y.fields == {"version": "1.10", "timestamp": "2025-01-XX", "ok": "yes"}  # no implicit YAML typing


def test_a_malformed_receipt_stops_the_whole_import(ledger_repo: Path, tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    (tree / "ops/receipts/deploy/broken.receipt").write_text("---\ncomponent: a\n")
    (tree / "ops/receipts/deploy/broken2.json").write_text("{")
    before = ledger_refs(ledger_repo)
    res = run(ledger_repo, "import-v4", str(tree))
    assert_error(res, "VM-IMPORT-MALFORMED")
    assert "broken.receipt" in res.stderr and "1 more malformed" in res.stderr and "broken2.json" in res.stderr
    assert ledger_refs(ledger_repo) == before
    js = run(ledger_repo, "import-v4", "--json", str(tree))
    assert js.returncode == 1 and json.loads(js.stdout)["error"]["code"] == "VM-IMPORT-MALFORMED"


def test_not_a_v4_tree(ledger_repo: Path, tmp_path: Path) -> None:
    assert_error(run(ledger_repo, "import-v4", str(tmp_path / "nope")), "VM-IMPORT-NOT-V4")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "x.receipt").write_text("---\na: b\n---\n")
    res = run(ledger_repo, "import-v4", str(plain))
    assert_error(res, "VM-IMPORT-NOT-V4")
    assert "ops/receipts" in res.stderr
    empty = tmp_path / "empty"
    (empty / "ops" / "receipts" / "deploy").mkdir(parents=True)
    assert_error(run(ledger_repo, "import-v4", str(empty)), "VM-IMPORT-NOT-V4")


def test_needs_a_ledger_and_a_signer_in_policy(repo: Path, gpg_key: Any) -> None:
    git(repo, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    assert_error(run(repo, "import-v4", str(FIXTURES)), "VM-NOT-INITIALIZED")
    assert ok_json(repo, "import-v4", "--dry-run", str(FIXTURES))["appended"] == 0  # a plan needs no ledger


def test_two_imports_at_once_append_each_receipt_once(ledger_repo: Path) -> None:
    """Both runs start together; they take turns, so the second finds the first's entries and appends nothing
    (two identical bodies in one second would be duplicate statements that verify refuses)."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-m", "git_vaultmesh", "import-v4", "--json", str(FIXTURES)],
                              cwd=ledger_repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    appended = sorted(json.loads(out)["appended"] for out, _err in outs)
    assert appended == [0, 3]
    assert len(imports(ledger_repo)) == 3
    assert ok_json(ledger_repo, "verify", "--all")["ok"] is True


def test_schema_3_receipt_names_its_signature_and_token_files(ledger_repo: Path, tmp_path: Path) -> None:
    """The 3.0-schema front matter lists sig_file / token_file; a real token over the artifact is parsed
    (genTime, imprint) but its TSA is not trusted; an armoured signature is kept, not checked."""
    tree = copy_tree(tmp_path)
    (tree / "dist").mkdir()
    (tree / "proofs").mkdir()
    artifact = b"release bytes\n"
    (tree / "dist" / "a.tar.gz").write_bytes(artifact)
    (tree / "proofs" / "a.sig.asc").write_text("-----BEGIN PGP SIGNATURE-----\n\niQ==\n-----END PGP SIGNATURE-----\n")
    (tree / "proofs" / "a.token.tsr").write_bytes(_token(artifact))
    digest = hashlib.sha256(artifact).hexdigest()
    rel = "ops/receipts/deploy/a-v3.receipt"
    (tree / rel).write_text(
        f'---\nschema_version: "3.0"\ntype: deployment\ncomponent: a\nversion: v3\ntimestamp: 2025-10-19T19:33:40Z\n'
        f"evidence:\n  artifact: dist/a.tar.gz\n  sha256: {digest}\nsignatures:\n  - type: gpg\n    keyid: ABCD\n"
        f"    sig_file: proofs/a.sig.asc\n    sig_sha256: \ntimestamps:\n  - type: rfc3161\n"
        f"    tsa: https://tsa.example.org/tsr\n    token_file: proofs/a.token.tsr\nstatus: active\n---\n")
    row = next(r for r in ok_json(ledger_repo, "import-v4", str(tree / rel))["receipts"] if r["path"] == rel)
    assert statuses(row["verified"]) == {"original": "kept", "artifact": "matches"}
    un = statuses(row["unverified"])
    assert un["signature"] == "not-checked" and un["token"] == "not-checked" and "fields" not in un
    tok = next(u for u in row["unverified"] if u["item"] == "token")["detail"]
    assert f"imprint equals the artifact's sha256 {digest}" in tok and "proofs/a.token.tsr" in tok


def test_tokens_the_policy_requires_date_the_import(ledger_repo: Path, tmp_path: Path) -> None:
    """With a TSA in policy the import entries are pending (VM-TSA-PENDING) until `timestamp --pending` gives
    them tokens, which date the import; the old receipts' own claims stay unverified."""
    from git_vaultmesh.rfc3161.server import TsaServer, make_identity

    ident = make_identity("ec")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(ident.ca_cert_pem)
    with TsaServer(ident, max_lifetime=120) as srv:
        ok(ledger_repo, "tsa", "add", "main", "--url", srv.url, "--ca-cert", str(ca))
        res = run(ledger_repo, "import-v4", str(FIXTURES))
        assert res.returncode == 0 and "timestamp --pending" in res.stderr, res.stderr
        report = json.loads(run(ledger_repo, "verify", "--all", "--json").stdout)
        assert report["ok"] is False
        assert {c["code"] for c in report["checks"] if not c["ok"]} == {"VM-TSA-PENDING"}
        ok(ledger_repo, "timestamp", "--pending")
    assert ok_json(ledger_repo, "verify", "--all")["ok"] is True
    assert all(e["body"]["unverified"] for e in imports(ledger_repo))
