"""Federation between separate logs: three real repositories as peers (file:// and a loopback `git daemon`),
each with its own signer; C2SP signed notes and cosignatures against the specs' own examples."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from git_vaultmesh.entry import canonical, sha256_hex
from git_vaultmesh.note import NoteKey, Verifier, parse_signature_line

from conftest import GpgKey, gen_gpg_key, git, make_repo, vm, vm_ok

LOG = "refs/vaultmesh/log"


# --- C2SP ----------------------------------------------------------------------------------------------------
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
SPEC_COSIG = ("— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5"
              "nNo0xUe+mbIUBkBIfZ+qnA==")


def test_signed_note_reproduces_the_reference_vector() -> None:
    key = NoteKey.parse(GO_SKEY)
    assert key.vkey() == GO_VKEY
    note = key.sign_note(GO_TEXT)
    assert note == GO_TEXT + "\n" + GO_SIG + "\n"
    assert Verifier.parse(GO_VKEY).open_note(note) == GO_TEXT
    with pytest.raises(Exception, match="does not verify"):
        Verifier.parse(GO_VKEY).open_note(note.replace("cryptography", "cryptographY"))


def test_cosignature_format_matches_the_spec_example() -> None:
    """tlog-cosignature's example line: 4-byte key id, 8-byte big-endian timestamp (its `time 1679315147`),
    64-byte Ed25519 signature; ours has the same layout and verifies over cosignature/v1 + the checkpoint."""
    name, blob = parse_signature_line(SPEC_COSIG)
    assert name == "witness.example.com/w1" and len(blob) == 4 + 8 + 64
    assert struct.unpack(">Q", blob[4:12])[0] == 1679315147
    checkpoint = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    key = NoteKey.parse(GO_SKEY.replace("PeterNeumann", "PeterNeumann"))
    line = key.cosign(checkpoint, 1679315147)
    v = Verifier.parse(key.vkey())
    assert v.check_cosignature(checkpoint, line) == 1679315147
    with pytest.raises(Exception, match="does not verify"):
        v.check_cosignature(checkpoint.replace("20852163", "20852164"), line)
    assert parse_signature_line(line)[1][:4] != parse_signature_line(key.sign_note(checkpoint).splitlines()[-1])[1][:4]


# --- three peers ---------------------------------------------------------------------------------------------
def _peer(tmp: Path, name: str, key: GpgKey) -> Path:
    repo = make_repo(tmp / name)
    git(repo, "config", "vaultmesh.signingKey", key.fingerprint)
    vm_ok(repo, "init")
    vm_ok(repo, "record", "v1.0", "--component", name)
    return repo


@pytest.fixture
def three(tmp_path: Path, gnupghome: str) -> dict[str, Any]:
    keys = {n: gen_gpg_key(gnupghome, n.capitalize()) for n in ("alice", "bob", "carol")}
    repos = {n: _peer(tmp_path, n, k) for n, k in keys.items()}
    for me, repo in repos.items():
        for other, orepo in repos.items():
            if other != me:
                vm_ok(repo, "federate", "add", other, f"file://{orepo}", "--trust-root", keys[other].fingerprint)
    return {"keys": keys, "repos": repos, "gnupghome": gnupghome}


def status(repo: Path) -> dict[str, Any]:
    """`federate status --json`; its exit status is 1 while a peer's last sync failed."""
    res = vm(repo, "federate", "status", "--json")
    data: dict[str, Any] = json.loads(res.stdout)
    assert res.returncode == (1 if any(p["divergence"] for p in data["peers"]) else 0), res.stderr
    return data


def sync(repo: Path, *names: str) -> subprocess.CompletedProcess[str]:
    res = vm(repo, "federate", "sync", *names, "--json")
    assert "Traceback" not in res.stderr, res.stderr
    return res


def test_three_peers_sync_in_two_orders_reach_one_merged_root(three: dict[str, Any]) -> None:
    r = three["repos"]
    assert sync(r["alice"], "bob", "carol").returncode == 0
    assert sync(r["bob"], "carol", "alice").returncode == 0
    assert sync(r["carol"], "alice").returncode == 0
    assert sync(r["carol"], "bob").returncode == 0
    roots = {n: status(repo)["merged"] for n, repo in r.items()}
    assert len({(m["size"], m["root"]) for m in roots.values()}) == 1, roots
    assert roots["alice"]["size"] == 3  # three releases; witness entries are not content
    # bob and carol appended witness entries since alice synced them: one more sync catches up, and then a
    # sync with nothing new appends nothing
    assert sync(r["alice"]).returncode == 0
    before = git(r["alice"], "rev-parse", LOG)
    out = json.loads(sync(r["alice"]).stdout)
    assert out["ok"] and all(p["unchanged"] and p["new_entries"] == 0 for p in out["peers"]), out
    assert git(r["alice"], "rev-parse", LOG) == before
    # every log, witness entries included, still verifies with verify
    for repo in r.values():
        vm_ok(repo, "verify", "--all")
    # the witness entry carries a C2SP cosignature over the peer's checkpoint, by the key it names
    w = [json.loads(x) for x in git(r["alice"], "log", "--notes=vaultmesh", "-1", "--format=").splitlines() if x]
    assert w == []  # witness entries name no subject commit: no note
    line = _entries(r["alice"])[-1]
    body = line["body"]
    assert body["type"] == "witness" and body["peer"]["name"] == "carol"
    Verifier.parse(body["cosignature"]["vkey"]).check_cosignature(body["checkpoint"], body["cosignature"]["line"])


def _entries(repo: Path) -> list[dict[str, Any]]:
    names = git(repo, "ls-tree", "-r", "--name-only", LOG, "--", "entries").split()
    return [json.loads(git(repo, "cat-file", "blob", f"{LOG}:{n}")) for n in names]


def test_merge_entry_verifies_and_tampering_is_detected(three: dict[str, Any]) -> None:
    a = three["repos"]["alice"]
    assert sync(a).returncode == 0
    out = json.loads(vm_ok(a, "federate", "merge", "--json"))
    assert out["merged"] == {"size": 3, "root": status(a)["merged"]["root"], "conflicts": 0}
    vm_ok(a, "verify", "--all")
    _rewrite_last_entry(a, lambda s: s.replace('"size":3', '"size":4'))
    res = vm(a, "verify", "--all", "--json")
    assert res.returncode == 1
    codes = {c["code"] for c in json.loads(res.stdout)["checks"] if not c["ok"]}
    assert codes & {"VM-LOG-NOT-APPEND-ONLY", "VM-SIG-INVALID", "VM-CHECKPOINT-MISMATCH"}, codes


def test_list_all_peers_shows_every_verified_copy(three: dict[str, Any]) -> None:
    a = three["repos"]["alice"]
    ours = json.loads(vm_ok(a, "federate", "list", "--json"))
    assert {e["source"] for e in ours["entries"]} == {"us"} and ours["count"] == 2  # genesis policy, release
    assert sync(a, "bob").returncode == 0  # carol is configured but never synced: no copy, not listed
    out = json.loads(vm_ok(a, "federate", "list", "--all-peers", "--json"))
    by_source: dict[str, list[dict[str, Any]]] = {}
    for e in out["entries"]:
        by_source.setdefault(e["source"], []).append(e)
    assert set(by_source) == {"us", "bob"} and out["count"] == len(out["entries"])
    assert [e["type"] for e in by_source["bob"]] == ["policy", "release"]
    assert [e["type"] for e in by_source["us"]] == ["policy", "release", "witness"]
    assert [e["seq"] for e in by_source["bob"]] == [0, 1]
    bob_lines = _entries(three["repos"]["bob"])
    for e, line in zip(by_source["bob"], bob_lines):
        assert e["body"] == line["body"] and e["body_digest"] == sha256_hex(canonical(line["body"]))
    releases = json.loads(vm_ok(a, "federate", "list", "--all-peers", "--type", "release", "--json"))["entries"]
    assert sorted(e["body"]["component"] for e in releases) == ["alice", "bob"]
    text = vm_ok(a, "federate", "list", "--all-peers")
    assert "bob" in text and "witness" in text and "peer bob" in text
    res = vm(a, "federate", "list", "--type", "relase")
    assert res.returncode != 0 and "VM-USAGE" in res.stderr and "Traceback" not in res.stderr


def _rewrite_last_entry(repo: Path, edit: Any) -> None:
    """An attacker with push access: a new log commit whose tree holds the last entry edited."""
    names = git(repo, "ls-tree", "-r", "--name-only", LOG, "--", "entries").split()
    _replace_file(repo, names[-1], edit(git(repo, "cat-file", "blob", f"{LOG}:{names[-1]}")) + "\n")


def _failed(res: subprocess.CompletedProcess[str], peer: str) -> dict[str, Any]:
    assert res.returncode == 1, res.stdout + res.stderr
    return next(p for p in json.loads(res.stdout)["peers"] if p["peer"] == peer)


def test_rewound_peer_is_reported_and_nothing_of_ours_changes(three: dict[str, Any]) -> None:
    a, b = three["repos"]["alice"], three["repos"]["bob"]
    assert sync(a, "bob").returncode == 0
    vm_ok(b, "record", "HEAD", "--environment", "prod")
    assert sync(a, "bob").returncode == 0
    # nothing new: answered from our witness entry, without fetching or re-verifying
    fast = json.loads(sync(a, "bob").stdout)["peers"][0]
    assert fast["ok"] and fast["unchanged"] and not fast["reverified"], fast
    git(b, "update-ref", LOG, git(b, "rev-parse", f"{LOG}~1"))  # bob rewinds his log
    ours, theirs = git(a, "rev-parse", LOG), git(a, "rev-parse", "refs/vaultmesh/remotes/bob/log")
    bad = _failed(sync(a, "bob"), "bob")
    assert bad["code"] == "VM-PEER-ROLLBACK" and bad["evidence"] and bad["reverified"]
    assert git(a, "rev-parse", LOG) == ours and git(a, "rev-parse", "refs/vaultmesh/remotes/bob/log") == theirs
    st = {p["name"]: p for p in status(a)["peers"]}
    assert st["bob"]["divergence"] == "VM-PEER-ROLLBACK" and st["bob"]["evidence"]


def test_rewritten_and_replaced_peer_logs(three: dict[str, Any], tmp_path: Path) -> None:
    a, b = three["repos"]["alice"], three["repos"]["bob"]
    assert sync(a, "bob").returncode == 0
    # an entry altered in bob's history: bob's own checks fail, with their code
    _rewrite_last_entry(b, lambda s: s.replace('"component":"bob"', '"component":"b0b"'))
    bad = _failed(sync(a, "bob"), "bob")
    assert bad["code"] in {"VM-LOG-NOT-APPEND-ONLY", "VM-CHECKPOINT-MISMATCH", "VM-SIG-INVALID"}, bad
    # bob starts over with a new log (same key): another log id at his URL
    git(b, "update-ref", "-d", LOG)
    git(b, "update-ref", "-d", "refs/notes/vaultmesh")
    vm_ok(b, "init")
    vm_ok(b, "record", "v1.0", "--component", "bob")
    vm_ok(b, "record", "HEAD", "--environment", "x")
    bad = _failed(sync(a, "bob"), "bob")
    assert bad["code"] == "VM-PEER-FORKED", bad


def test_checkpoint_signed_by_a_key_outside_the_peers_policy(three: dict[str, Any]) -> None:
    a, b = three["repos"]["alice"], three["repos"]["bob"]
    mallory = gen_gpg_key(three["gnupghome"], "Mallory")
    cp = git(b, "cat-file", "blob", f"{LOG}:checkpoint") + "\n"
    sig = subprocess.run(["gpg", "--batch", "--armor", "--detach-sign", "-u", mallory.fingerprint], input=cp,
                         capture_output=True, text=True, check=True).stdout
    _replace_file(b, "checkpoint.sig", sig)
    assert _failed(sync(a, "bob"), "bob")["code"] == "VM-CHECKPOINT-SIG"
    assert git(a, "for-each-ref", "refs/vaultmesh/remotes/bob/log") == ""


def test_equivocation_seen_through_a_third_peers_witness(three: dict[str, Any]) -> None:
    a, b, c = (three["repos"][n] for n in ("alice", "bob", "carol"))
    vm_ok(b, "record", "HEAD", "--environment", "one")
    assert sync(c, "bob").returncode == 0  # carol witnesses bob at size 3
    git(b, "update-ref", LOG, git(b, "rev-parse", f"{LOG}~1"))
    git(b, "update-ref", "refs/notes/vaultmesh", git(b, "rev-parse", "refs/notes/vaultmesh~1"))
    vm_ok(b, "record", "HEAD", "--environment", "two")  # bob shows another size-3 log
    assert sync(a, "bob").returncode == 0  # alice cannot tell yet: she has not seen carol's witness
    assert json.loads(sync(a, "bob").stdout)["peers"][0]["reverified"] is False
    assert sync(a, "carol").returncode == 0
    # bob is unchanged, but carol's copy moved: her new witness entries are held against bob's log again
    bad = _failed(sync(a, "bob"), "bob")
    assert bad["code"] == "VM-PEER-EQUIVOCATION" and bad["reverified"] and bad["evidence"], bad
    assert "carol" in bad["detail"]


def test_noop_sync_falls_back_to_the_full_checks_on_any_doubt(three: dict[str, Any]) -> None:
    """The no-op answer needs the peer's head, our copy and our last witness entry to agree; the local record
    only says where to look. Edited or contradicted, the sync fetches and judges in full."""
    a, b = three["repos"]["alice"], three["repos"]["bob"]
    copy = "refs/vaultmesh/remotes/bob/log"

    def once() -> dict[str, Any]:
        res = sync(a, "bob")
        assert res.returncode == 0, res.stdout + res.stderr
        out: dict[str, Any] = json.loads(res.stdout)["peers"][0]
        assert out["ok"] and out["unchanged"], out
        return out

    assert sync(a, "bob").returncode == 0
    assert once()["reverified"] is False
    state = a / ".git" / "vaultmesh" / "federation.json"
    data = json.loads(state.read_text())
    data["bob"]["judged"]["witness"] = 0  # points at our genesis: not a witness of bob
    state.write_text(json.dumps(data))
    assert once()["reverified"] is True
    assert once()["reverified"] is False
    head = git(a, "rev-parse", copy)
    git(a, "update-ref", copy, git(a, "rev-parse", f"{copy}~1"))  # our copy moved behind the witness's back
    assert once()["reverified"] is True
    assert git(a, "rev-parse", copy) == head  # the judged head is our copy again
    vm_ok(a, "record", "HEAD", "--environment", "prod")  # our log grows: the witness is still the last of bob
    assert once()["reverified"] is False
    c = three["repos"]["carol"]
    assert sync(c, "bob").returncode == 0 and sync(a, "carol").returncode == 0
    assert once()["reverified"] is False  # carol's copy moved; her witness of bob agrees with ours
    vm_ok(b, "record", "HEAD", "--environment", "prod")  # bob moves: fetched and judged
    res = json.loads(sync(a, "bob").stdout)["peers"][0]
    assert res["ok"] and res["reverified"] and not res["unchanged"] and res["new_entries"] == 1
    assert once()["reverified"] is False
    git(a, "config", "vaultmesh.peer.bob.trustRoot", three["keys"]["carol"].fingerprint)  # another pin
    bad = _failed(sync(a, "bob"), "bob")
    assert bad["code"] == "VM-TRUST-ROOT-MISMATCH" and bad["reverified"], bad


def test_unreachable_peer_does_not_stop_the_others(three: dict[str, Any], tmp_path: Path) -> None:
    a = three["repos"]["alice"]
    vm_ok(a, "federate", "add", "dave", f"file://{tmp_path / 'nowhere'}")
    res = sync(a)
    assert res.returncode == 1
    out = {p["peer"]: p for p in json.loads(res.stdout)["peers"]}
    assert out["dave"]["code"] == "VM-PEER-UNREACHABLE"
    assert out["bob"]["ok"] and out["carol"]["ok"]
    vm_ok(a, "verify", "--all")


def test_bad_input(three: dict[str, Any]) -> None:
    a = three["repos"]["alice"]
    res = vm(a, "federate", "sync", "nobody")
    assert res.returncode == 1 and "VM-PEER-UNKNOWN" in res.stderr
    res = vm(a, "federate", "add", "x y", "file:///tmp")
    assert res.returncode == 1 and "VM-USAGE" in res.stderr
    res = vm(a, "federate", "add", "eve", "file:///tmp", "--trust-root", "")
    assert res.returncode in (1, 2) and "--trust-root" in res.stderr
    res = vm(a, "federate", "add", "bob", "file:///tmp")
    assert res.returncode == 1 and "already configured" in res.stderr


def test_conflicting_statements_are_kept_and_reported(three: dict[str, Any]) -> None:
    a, b = three["repos"]["alice"], three["repos"]["bob"]
    git(b, "tag", "-a", "v2.0", "-m", "v2.0")
    vm_ok(b, "record", "v2.0", "--component", "shared", "--version", "2.0")
    (a / "other.txt").write_text("other\n")
    git(a, "add", ".")
    git(a, "commit", "-qm", "other")
    git(a, "tag", "-a", "v2.0", "-m", "v2.0")
    vm_ok(a, "record", "v2.0", "--component", "shared", "--version", "2.0")
    assert sync(a, "bob").returncode == 0
    st = status(a)
    assert len(st["conflicts"]) == 1 and {x["source"] for x in st["conflicts"][0]["entries"]} == {"us", "bob"}
    res = vm(a, "federate", "status", "--strict")
    assert res.returncode == 1 and "VM-FEDERATION-CONFLICT" in res.stderr


# --- a peer behind git daemon on loopback --------------------------------------------------------------------
@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    base = tmp_path / "served"
    base.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["git", "daemon", "--export-all", f"--base-path={base}", "--listen=127.0.0.1",
                             f"--port={port}", "--reuseaddr", "--timeout=30", "--init-timeout=10", str(base)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield base, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_sync_over_git_daemon(three: dict[str, Any], daemon: tuple[Path, int]) -> None:
    base, port = daemon
    a, c = three["repos"]["alice"], three["repos"]["carol"]
    git(base, "clone", "-q", "--bare", "--mirror", str(c), "carol.git")
    vm_ok(a, "federate", "add", "carol-d", f"git://127.0.0.1:{port}/carol.git")
    res = sync(a, "carol-d")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)["peers"][0]
    assert out["ok"] and out["trust"] == "tofu" and "trusted on first use" in out["detail"]
    assert git(a, "config", "vaultmesh.peer.carol-d.trustRoot") == three["keys"]["carol"].fingerprint


def test_checkpoints_as_c2sp_signed_notes(ledger_repo: Path) -> None:
    """`policy set-note-key` pins a local Ed25519 note key; every later checkpoint is also a signed note that
    the pinned verifier key opens; a note that is absent, or signed by another key, fails verify."""
    out = json.loads(vm_ok(ledger_repo, "policy", "set-note-key", "--json"))
    assert out["ok"], out
    vm_ok(ledger_repo, "record", "v1.0")
    note = git(ledger_repo, "cat-file", "blob", f"{LOG}:checkpoint.note") + "\n"
    cp = git(ledger_repo, "cat-file", "blob", f"{LOG}:checkpoint") + "\n"
    policy = [e for e in _entries(ledger_repo) if e["body"]["type"] == "policy"][-1]["body"]
    (vkey,) = policy["note_keys"]
    assert Verifier.parse(vkey).open_note(note) == cp
    log_id = policy["log"]
    assert vkey.startswith(f"vaultmesh/{log_id}+")
    vm_ok(ledger_repo, "verify", "--all")
    # another key's note in a new log commit: refused
    other = NoteKey.generate(f"vaultmesh/{log_id}").sign_note(cp)
    _replace_file(ledger_repo, "checkpoint.note", other)
    res = vm(ledger_repo, "verify", "--json")
    assert res.returncode == 1 and "VM-CHECKPOINT-SIG" in {c["code"] for c in json.loads(res.stdout)["checks"]}
    # a log commit without the note, while the policy pins a note key: refused as absent
    git(ledger_repo, "update-ref", LOG, git(ledger_repo, "rev-parse", f"{LOG}~1"))
    env = dict(os.environ, GIT_INDEX_FILE=str(ledger_repo / ".git" / "tamper-index"))
    subprocess.run(["git", "read-tree", LOG], cwd=ledger_repo, env=env, check=True)
    subprocess.run(["git", "update-index", "--force-remove", "checkpoint.note"], cwd=ledger_repo, env=env, check=True)
    tree = subprocess.run(["git", "write-tree"], cwd=ledger_repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()
    git(ledger_repo, "update-ref", LOG, git(ledger_repo, "commit-tree", tree, "-p", LOG, "-m", "drop the note"))
    res = vm(ledger_repo, "verify", "--json")
    assert res.returncode == 1 and "VM-CHECKPOINT-MISSING" in {c["code"] for c in json.loads(res.stdout)["checks"]}


def _replace_file(repo: Path, path: str, content: str) -> None:
    new = git(repo, "hash-object", "-w", "--stdin", input=content.encode())
    env = dict(os.environ, GIT_INDEX_FILE=str(repo / ".git" / "tamper-index"))
    subprocess.run(["git", "read-tree", LOG], cwd=repo, env=env, check=True)
    subprocess.run(["git", "update-index", "--cacheinfo", f"100644,{new},{path}"], cwd=repo, env=env, check=True)
    tree = subprocess.run(["git", "write-tree"], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()
    git(repo, "update-ref", LOG, git(repo, "commit-tree", tree, "-p", LOG, "-m", "replace"))
