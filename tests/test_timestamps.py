"""RFC 3161 timestamps inside the ledger: real repositories, real gpg, the built-in TSA on 127.0.0.1 and the real
`openssl ts`; no mocks.

Covers: every bad token rejected with its own code inside a ledger, long-term validation through archive
timestamps (short-lived TSA certificates + a later verification time), a token made by `openssl ts -reply`
counting like ours, a TSA down/garbage/slow at record time leaving entries pending (never lost), `timestamp
--pending` completing them in one append, and `tsa serve`.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from git_vaultmesh import ledger, merkle
from git_vaultmesh.config import signing_key
from git_vaultmesh.entry import Entry
from git_vaultmesh.git import Repo
from git_vaultmesh.rfc3161.server import TsaIdentity, TsaServer, make_identity, write_identity
from git_vaultmesh.rfc3161.timestamping import archive_data, sign_bodies, timestamp_body
from git_vaultmesh.rfc3161.tsa import request_token, spki_pin_of, verify_token

from cli_helpers import assert_error, ok, ok_json, run
from conftest import GpgKey, gen_gpg_key, git
from tsa_kit import openssl_query, openssl_reply, openssl_verify, token

UTC = timezone.utc


# --- fixtures and helpers --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ident() -> TsaIdentity:
    return make_identity("ec")


@pytest.fixture
def server(ident: TsaIdentity) -> Iterator[TsaServer]:
    with TsaServer(ident, max_lifetime=120) as srv:
        yield srv


def write_ca(tmp: Path, ident: TsaIdentity) -> Path:
    path = tmp / f"ca-{abs(hash(ident.ca_cert_pem)) % 10_000}.pem"
    path.write_bytes(ident.ca_cert_pem)
    return path


def add_tsa(repo: Path, name: str, srv: TsaServer, tmp: Path, *extra: str, path: str = "") -> dict[str, Any]:
    """`path` gives one server a second URL (tsa add refuses a second TSA at the same URL)."""
    return ok_json(repo, "tsa", "add", name, "--url", srv.url + path,  # type: ignore[no-any-return]
                   "--ca-cert", str(write_ca(tmp, srv.identity)), *extra)


def entries(repo: Path) -> list[Entry]:
    with Repo.discover(repo) as r:
        return ledger.load(r)[1]


def append_stamp(repo: Path, tokens: list[tuple[str, bytes]], *, entry: str | None = None,
                 checkpoint: int | None = None) -> int:
    """Append a timestamp entry with these (TSA name, DER) tokens, signed by the repo's key; return its seq."""
    with Repo.discover(repo) as r:
        key = signing_key(r)
        head = ledger.read_head(r)
        assert head.log_id is not None
        (stamp,) = sign_bodies(key, [timestamp_body(head.log_id, tokens, entry=entry, checkpoint=checkpoint)])
        return ledger.append(r, key, [stamp]).first_seq


def verify_json(repo: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    res = run(repo, "verify", *args, "--json", env=env)
    return res.returncode, json.loads(res.stdout)


def failed(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if not c["ok"]]


def codes(report: dict[str, Any]) -> set[str]:
    return {c["code"] for c in failed(report)}


def log_commits(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "refs/vaultmesh/log"))


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- record with a TSA in policy ----------------------------------------------------------------------------

def test_record_timestamps_in_the_same_append(ledger_repo: Path, server: TsaServer, tmp_path: Path) -> None:
    added = add_tsa(ledger_repo, "main", server, tmp_path)
    assert added["appended"] and added["require"] == 1 and added["probe"]["spki_pin"] == spki_pin_of(
        server.identity.cert_pem)
    assert git(ledger_repo, "config", "vaultmesh.tsa.main.url") == server.url  # operational: git config
    listed = ok_json(ledger_repo, "tsa", "list")
    assert [(t["name"], t["url"]) for t in listed["tsas"]] == [("main", server.url)]
    assert listed["tokens_required"] == {"*": 1}
    before = log_commits(ledger_repo)
    out = ok_json(ledger_repo, "record", "v1.0")
    assert out["timestamps"] == {"tsas": ["main"], "pending": False, "problems": []}
    assert log_commits(ledger_repo) == before + 1  # the receipt and its timestamp: one append
    es = entries(ledger_repo)
    release, stamp = es[-2], es[-1]
    assert release.id == out["entry"] and stamp.type == "timestamp" and stamp.body["entry"] == release.id
    assert [t["tsa"] for t in stamp.body["tokens"]] == ["main"]
    code, report = verify_json(ledger_repo, "v1.0")
    assert code == 0, failed(report)
    assert any(c["check"] == "entry.tokens" and c["ok"] for c in report["checks"])
    # the token's imprint is SHA-256 of the release's line (body and signatures): openssl agrees
    tsr = base64.b64decode(stamp.body["tokens"][0]["tsr"])
    res = openssl_verify(tmp_path, tsr, release.line, server.identity.ca_cert_pem)
    assert res.returncode == 0 and "Verification: OK" in res.stdout, res.stderr


def test_tsa_add_probes_and_refuses_a_wrong_ca(ledger_repo: Path, server: TsaServer, tmp_path: Path) -> None:
    other = make_identity("ec")
    before = log_commits(ledger_repo)
    res = run(ledger_repo, "tsa", "add", "main", "--url", server.url, "--ca-cert", str(write_ca(tmp_path, other)))
    assert_error(res, "VM-TSA-CHAIN")
    assert log_commits(ledger_repo) == before  # nothing signed, nothing appended
    res = run(ledger_repo, "tsa", "add", "main", "--url", server.url, "--ca-cert", str(write_ca(tmp_path, other)),
              "--require", "2", "--offline")
    assert_error(res, "VM-USAGE")  # 2 tokens required with 1 TSA in policy


# --- every bad token has its own code inside a ledger --------------------------------------------------------

def test_bad_tokens_rejected_with_their_own_code(ledger_repo: Path, server: TsaServer, tmp_path: Path) -> None:
    other = make_identity("ec")  # a TSA under another CA
    add_tsa(ledger_repo, "main", server, tmp_path)
    # a second policy TSA, same CA, but pinned to another key: the server's tokens fail its pin
    add_tsa(ledger_repo, "pinned", server, tmp_path, "--offline", "--pin-spki", spki_pin_of(other.cert_pem),
            path="/pinned")
    res = run(ledger_repo, "record", "v1.0", "--json")
    assert res.returncode == 0, res.stderr
    # record asked both TSAs; the pinned one's token failed verification and was NOT appended (no poison)
    assert json.loads(res.stdout)["timestamps"]["tsas"] == ["main"]
    assert "VM-TSA-PIN" in res.stderr
    code, report = verify_json(ledger_repo, "--all")
    assert code == 0, failed(report)

    es = entries(ledger_repo)
    release = next(i for i, e in enumerate(es) if e.type == "release")
    line, rid = es[release].line, es[release].id
    policy_line = es[1].line
    good = token(server.identity, line)[0]
    html = b"<!DOCTYPE html>\n<html><body>Please sign in</body></html>\n"
    cases = {
        "VM-TSA-OTHER-ENTRY": ("main", token(server.identity, policy_line)[0]),  # a token for another entry
        "VM-TSA-IMPRINT": ("main", token(server.identity, line + b" ")[0]),  # for other bytes
        "VM-TSA-EMPTY": ("main", b""),
        "VM-TSA-NOT-DER": ("main", html),
        "VM-TSA-TRUNCATED": ("main", good[:-20]),
        "VM-TSA-UNKNOWN": ("nobody", good),  # a TSA the policy does not name
        "VM-TSA-CHAIN": ("main", token(other, line)[0]),  # signer does not chain to the policy CA
        "VM-TSA-PIN": ("pinned", good),  # right CA, key not the pinned one
    }
    seq_of = {code: append_stamp(ledger_repo, [tok], entry=rid) for code, tok in cases.items()}
    for scope in (["--all"], ["v1.0"]):
        code, report = verify_json(ledger_repo, *scope)
        assert code == 1
        bad = failed(report)
        for want, seq in seq_of.items():
            mine = [c for c in bad if c["detail"].startswith(f"timestamp entry #{seq} ")]
            assert [c["code"] for c in mine] == [want], (want, mine)
            assert mine[0]["hint"], mine
        # the release has a valid token, so it is not pending: each failure is the token's own
        assert "VM-TSA-PENDING" not in codes(report)
        assert codes(report) == set(cases), codes(report)
    other_entry = next(c for c in failed(report) if c["code"] == "VM-TSA-OTHER-ENTRY")
    assert "entry #1's line" in other_entry["detail"]


# --- long-term validation ---------------------------------------------------------------------------------

def test_archive_timestamp_keeps_expired_tokens_valid(ledger_repo: Path, ident: TsaIdentity,
                                                       tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    short = make_identity(ca=ident, not_before=now - timedelta(hours=1), not_after=now + timedelta(days=1))
    long = make_identity(ca=ident)  # same CA, a signer valid for a year
    later = {"VAULTMESH_NOW": iso(now + timedelta(days=3))}  # the short signer has expired by then
    with TsaServer(short, max_lifetime=120) as srv:
        add_tsa(ledger_repo, "main", srv, tmp_path)
        ok(ledger_repo, "record", "v1.0")
    code, report = verify_json(ledger_repo, "v1.0")
    assert code == 0, failed(report)  # today the token is valid
    doctor = ok_json(ledger_repo, "doctor")
    assert any("expires" in w and "timestamp --archive" in w for w in doctor["warnings"]), doctor
    # three days later the signer certificate has expired and nothing renewed the token
    code, report = verify_json(ledger_repo, "v1.0", env=later)
    # (so the release also lacks a valid token: pending)
    assert code == 1 and codes(report) == {"VM-TSA-EXPIRED-UNANCHORED", "VM-TSA-PENDING"}, failed(report)
    assert any("VAULTMESH_NOW" in c["detail"] for c in report["checks"])  # the injected time is printed
    # an archive timestamp made AFTER the certificate expired does not help (genTime forged 2 days ahead)
    with Repo.discover(ledger_repo) as r:
        head = ledger.read_head(r)
        assert head.log_id is not None
        leaves = [merkle.leaf_hash(e.line) for e in ledger.read_entries(r, str(head.commit))]
        late, _ = token(long, archive_data(head.log_id, head.size, leaves), gen_time=now + timedelta(days=2))
    append_stamp(ledger_repo, [("main", late)], checkpoint=head.size)
    code, report = verify_json(ledger_repo, "v1.0", env=later)
    assert code == 1 and codes(report) == {"VM-TSA-EXPIRED-UNANCHORED", "VM-TSA-PENDING"}, failed(report)
    # an archive timestamp made while the certificate was valid anchors it
    with TsaServer(long, max_lifetime=120) as srv:
        git(ledger_repo, "config", "vaultmesh.tsa.main.url", srv.url)
        out = ok_json(ledger_repo, "timestamp", "--archive")
    assert out["checkpoint"] == head.size + 1 and out["tsas"] == ["main"]
    code, report = verify_json(ledger_repo, "v1.0", env=later)
    assert code == 0, failed(report)
    code, report = verify_json(ledger_repo, "--all", env=later)
    assert code == 0, failed(report)
    assert ok_json(ledger_repo, "doctor")["warnings"] == []  # an archive by a long-lived signer covers all
    # ... until the archive's own signer expires, un-renewed
    code, report = verify_json(ledger_repo, "v1.0", env={"VAULTMESH_NOW": iso(now + timedelta(days=400))})
    assert code == 1 and "VM-TSA-EXPIRED-UNANCHORED" in codes(report)


# --- a token made by openssl ----------------------------------------------------------------------------------

def test_openssl_reply_inside_a_ledger_verifies(ledger_repo: Path, server: TsaServer, tmp_path: Path) -> None:
    add_tsa(ledger_repo, "main", server, tmp_path)
    server.mode = "down"
    res = run(ledger_repo, "record", "v1.0")
    assert res.returncode == 0 and "VM-TSA-PENDING" in res.stderr
    es = entries(ledger_repo)
    release = next(e for e in es if e.type == "release")
    d = tmp_path / "ossl"
    write_identity(server.identity, d)
    tsr = openssl_reply(d, openssl_query(d, release.line), d / "tsa.pem", d / "tsa.key")
    append_stamp(ledger_repo, [("main", tsr)], entry=release.id)
    code, report = verify_json(ledger_repo, "v1.0")
    assert code == 0, failed(report)


# --- TSA down, garbage or slow at record time: pending, never lost ---------------------------------------------

def test_tsa_failures_leave_entries_pending_then_timestamp_pending(ledger_repo: Path, server: TsaServer,
                                                                    tmp_path: Path) -> None:
    add_tsa(ledger_repo, "main", server, tmp_path)
    git(ledger_repo, "config", "vaultmesh.tsaTimeout", "1")
    recorded = []
    for mode, args in (("down", ["v1.0"]), ("garbage", ["HEAD", "--environment", "prod"]),
                       ("slow", ["HEAD", "--environment", "staging"])):
        server.mode = mode
        started = time.monotonic()
        res = run(ledger_repo, "record", *args, "--json")
        assert res.returncode == 0, (mode, res.stderr)  # recorded anyway
        assert time.monotonic() - started < 15
        out = json.loads(res.stdout)
        assert out["timestamps"]["pending"] is True and out["timestamps"]["tsas"] == []
        assert "warning:" in res.stderr and "VM-TSA-PENDING" in res.stderr, res.stderr
        recorded.append(out["entry"])
    assert [e.id for e in entries(ledger_repo) if e.id in recorded] == recorded  # all present
    assert not [e for e in entries(ledger_repo) if e.type == "timestamp"]
    code, report = verify_json(ledger_repo)
    assert code == 1 and codes(report) == {"VM-TSA-PENDING"}
    assert sum(c["code"] == "VM-TSA-PENDING" for c in failed(report)) == 3
    res = run(ledger_repo, "verify", "--allow-pending")
    assert res.returncode == 0, res.stdout
    assert "allowed: --allow-pending" in res.stdout and "accepted by --allow-pending" in res.stdout
    listed = ok_json(ledger_repo, "timestamp", "--pending", "--list")
    assert [e["id"] for e in listed["entries"]] == recorded
    # still down: nothing appended, exit 1 with the code
    server.mode = "down"
    before = log_commits(ledger_repo)
    assert_error(run(ledger_repo, "timestamp", "--pending"), "VM-TSA-PENDING")
    assert log_commits(ledger_repo) == before
    # back up: every missing token in ONE append
    server.mode = "ok"
    out = ok_json(ledger_repo, "timestamp", "--pending")
    assert out["appended"] == 3 and out["tokens"] == 3 and out["still_pending"] == []
    assert log_commits(ledger_repo) == before + 1
    code, report = verify_json(ledger_repo)
    assert code == 0, failed(report)
    assert ok_json(ledger_repo, "timestamp", "--pending")["pending"] == 0


# --- the built-in server as a command ---------------------------------------------------------------------

def test_tsa_serve_loopback_with_identity_and_lifetime(repo: Path, tmp_path: Path) -> None:
    ident_dir = tmp_path / "tsa-id"
    proc = subprocess.Popen([sys.executable, "-m", "git_vaultmesh", "tsa", "serve", "--port", "0", "--identity",
                             str(ident_dir), "--max-lifetime", "4"], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = first.split(" listening on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        tsr, nonce = request_token(url, b"data", timeout=5)
        from git_vaultmesh.rfc3161.tsa import TsaTrust

        trust = TsaTrust("x", (ident_dir / "ca.pem").read_text(), spki_pin_of((ident_dir / "tsa.pem").read_bytes()))
        verify_token(tsr, b"data", trust, nonce)
        assert proc.wait(timeout=15) == 0  # stopped by itself after --max-lifetime
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (ident_dir / "tsa.key").stat().st_mode & 0o077 == 0  # keys are private
    assert_error(run(repo, "tsa", "serve", "--host", "0.0.0.0", "--port", "0"), "VM-USAGE")  # loopback only


def test_policy_changes_are_timestamped_too(ledger_repo: Path, server: TsaServer, tmp_path: Path,
                                           gpg_key: GpgKey) -> None:
    """Once a TSA is required, a policy change made with `policy` carries its tokens: verify is not pending."""
    add_tsa(ledger_repo, "main", server, tmp_path)
    bob = gen_gpg_key(gpg_key.home, "Bob")
    ok_json(ledger_repo, "policy", "add-signer", "bob", "--key", bob.fingerprint)
    rc, report = verify_json(ledger_repo, "--all")
    assert rc == 0, failed(report)
    stamped = {e.body.get("entry") for e in entries(ledger_repo) if e.type == "timestamp"}
    policy_ids = [e.id for e in entries(ledger_repo) if e.type == "policy"]
    assert policy_ids[-1] in stamped


def test_pull_does_not_carry_archive_timestamps_of_a_diverged_log(
        ledger_repo: Path, server: TsaServer, tmp_path: Path, gpg_key: GpgKey) -> None:
    """An archive token covers a checkpoint of OUR log; re-appended elsewhere it would fail forever. pull
    stops (VM-PULL-WOULD-DROP, nothing changed); --drop-archives merges and keeps our old head reachable."""
    add_tsa(ledger_repo, "main", server, tmp_path)
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(ledger_repo), str(origin))
    push = ["refs/vaultmesh/log", "refs/notes/vaultmesh"]
    git(ledger_repo, "push", "-q", str(origin), "refs/vaultmesh/log")  # no notes yet: no subject recorded
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    git(other, "fetch", "-q", "origin", "refs/vaultmesh/*:refs/vaultmesh/*", "refs/notes/*:refs/notes/*")
    git(other, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    git(other, "config", "vaultmesh.tsa.main.url", server.url)
    ok(other, "record", "HEAD", "--environment", "theirs")
    git(other, "push", "-q", "origin", *push)
    ok(ledger_repo, "record", "HEAD", "--environment", "ours")
    ok(ledger_repo, "timestamp", "--archive")
    git(ledger_repo, "remote", "add", "origin", str(origin))
    before = git(ledger_repo, "rev-parse", "refs/vaultmesh/log")
    assert_error(run(ledger_repo, "pull", "origin"), "VM-PULL-WOULD-DROP")
    assert git(ledger_repo, "rev-parse", "refs/vaultmesh/log") == before  # nothing moved
    res = run(ledger_repo, "pull", "origin", "--drop-archives")
    assert res.returncode == 0, res.stderr
    assert "archive timestamp" in res.stderr
    assert git(ledger_repo, "rev-parse", f"refs/vaultmesh/keep/{before}") == before  # the old head stays
    rc, report = verify_json(ledger_repo, "--all")
    assert rc == 0, failed(report)
    envs = [e.body.get("environment") for e in entries(ledger_repo) if e.type == "deploy"]
    assert envs == ["theirs", "ours"]


# --- fetched first, verified while the append is built ----------------------------------------------------


def test_confirm_withdraws_a_built_commit_before_the_refs_move(ledger_repo: Path) -> None:
    """ledger.append's `confirm` is asked after the commit is built and before the refs move; False withdraws
    that commit and the attempt starts again from the precheck, whose answer may have changed."""
    stamp_a, stamp_b = b"\x30\x03\x02\x01\x01", b"\x30\x03\x02\x01\x02"  # two different (bogus) token bodies
    with Repo.discover(ledger_repo) as r:
        key = signing_key(r)
        before = ledger.read_head(r)
        assert before.log_id is not None
        first, second = sign_bodies(key, [timestamp_body(before.log_id, [("t", stamp_a)], checkpoint=1),
                                          timestamp_body(before.log_id, [("t", stamp_b)], checkpoint=1)])
        offered: list[Entry] = [first]
        asked: list[str | None] = []

        def confirm() -> bool:
            asked.append(r.ref_oid(ledger.REF_LOG))  # the refs have not moved yet when confirm is asked
            if len(asked) == 1:
                offered[0] = second  # the first build is withdrawn: the next attempt appends this instead
                return False
            return True

        result = ledger.append(r, key, lambda _repo, _head: list(offered), confirm=confirm)
        assert asked == [before.commit, before.commit]
        assert result.attempts == 2
        log = ledger.load(r)[1]
    assert log[-1].id == second.id and first.id not in {e.id for e in log}


def test_record_fetches_without_cryptography_and_verifies_in_a_thread(ledger_repo: Path, server: TsaServer,
                                                                       tmp_path: Path) -> None:
    """Requesting and parsing a token needs der.py only; cryptography loads in the verifying thread. A token
    that fails there is never appended (the pinned TSA below), while the good one is."""
    probe = ("import sys\nfrom git_vaultmesh.rfc3161 import tsa\n"
             f"tsr, nonce = tsa.request_token({server.url!r}, b'x', 5)\n"
             "tsa.parse_response(tsr)\n"
             "print(sorted(m for m in sys.modules if m.startswith('cryptography')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

    other = make_identity("ec")
    add_tsa(ledger_repo, "main", server, tmp_path)
    add_tsa(ledger_repo, "pinned", server, tmp_path, "--offline", "--pin-spki", spki_pin_of(other.cert_pem),
            path="/pinned")
    before = len(entries(ledger_repo))
    res = run(ledger_repo, "record", "HEAD", "--environment", "prod", "--json")
    assert res.returncode == 0, res.stderr
    stamps = [e for e in entries(ledger_repo)[before:] if e.type == "timestamp"]
    assert [[t["tsa"] for t in e.body["tokens"]] for e in stamps] == [["main"]]
    assert json.loads(res.stdout)["timestamps"]["tsas"] == ["main"] and "VM-TSA-PIN" in res.stderr


def test_tsa_add_refuses_a_second_name_for_one_tsa(ledger_repo: Path, server: TsaServer, tmp_path: Path) -> None:
    add_tsa(ledger_repo, "one", server, tmp_path, "--offline")
    before = log_commits(ledger_repo)
    res = run(ledger_repo, "tsa", "add", "two", "--url", server.url, "--ca-cert",
              str(write_ca(tmp_path, server.identity)), "--offline")
    assert_error(res, "VM-TSA-DUPLICATE")
    assert log_commits(ledger_repo) == before
