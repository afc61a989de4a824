"""Adversarial round two, signers and policy: SSH signatures in the wrong namespace, over other bodies or for
another declared signer; OpenPGP keys that expired, with backdated signature packets and recorded_at; policy
changes raced, locking everyone out, or completed by cosigns. Real repositories, the real CLI, real gpg and
ssh-keygen; forged entries are signed by the real tools and appended with the tool's own append API (so only
`verify` stands in the way). Listed in docs/threat-model.md, "Adversarial round two"."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from git_vaultmesh.entry import Entry, canonical, make_entry, now_rfc3339

from conftest import GIT_ENV, GpgKey, gen_gpg_key, git, kill_agent, make_gpg_home, make_repo, vm, vm_ok
from policy_kit import (
    codes,
    cosign_body,
    deploy_body,
    entries,
    failures,
    inject,
    inject_line,
    key,
    ledger_refs,
    refused,
    tag,
    verify_json,
)

UTC = timezone.utc


def _copy(template: Path, tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(template, repo, symlinks=True)
    return repo


def _bad(cwd: Path, *args: str) -> set[str]:
    """verify ARGS --json must fail; the codes of its failed checks."""
    rc, rep = verify_json(cwd, *args)
    assert rc == 1, rep
    return codes(rep)


# --- SSH signers ---------------------------------------------------------------------------------------------


@dataclass
class SshWorld:
    repo: Path
    alice: str  # ed25519, genesis
    bob: str  # RSA 3072, pinned
    mallory: str  # ed25519, in no policy
    fpr: dict[str, str]


def _ssh_key(directory: Path, name: str, kind: str) -> tuple[str, str]:
    path = directory / f"id_{name}"
    extra = ["-b", "3072"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", f"{name}@example.org", "-f",
                    str(path)], check=True, capture_output=True)
    out = subprocess.run(["ssh-keygen", "-l", "-f", f"{path}.pub"], check=True, capture_output=True, text=True)
    return str(path), out.stdout.split()[1]


@pytest.fixture(scope="module")
def ssh_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshWorld]:
    """alice (ed25519) genesis, bob (RSA) pinned; releases need 2 of them."""
    base = tmp_path_factory.mktemp("sshworld")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**GIT_ENV, "HOME": str(base)}.items():
            mp.setenv(k, v)
        mp.delenv("SOURCE_DATE_EPOCH", raising=False)
        (alice, a), (bob, b), (mallory, m) = (_ssh_key(base, n, t) for n, t in
                                              (("alice", "ed25519"), ("bob", "rsa"), ("mallory", "ed25519")))
        repo = make_repo(base / "repo")
        git(repo, "config", "vaultmesh.signingFormat", "ssh")
        git(repo, "config", "vaultmesh.signingKey", alice)
        vm_ok(repo, "init", "--name", "alice")
        vm_ok(repo, "policy", "add-signer", "bob", "--ssh-key", bob + ".pub")
        vm_ok(repo, "policy", "set-threshold", "release", "2")
        yield SshWorld(repo, alice, bob, mallory, {"alice": a, "bob": b, "mallory": m})


@pytest.fixture
def ssh(ssh_world: SshWorld, tmp_path: Path) -> SshWorld:
    return SshWorld(_copy(ssh_world.repo, tmp_path), ssh_world.alice, ssh_world.bob, ssh_world.mallory,
                    ssh_world.fpr)


def _sshsig(private: str, data: bytes, namespace: str = "vaultmesh") -> str:
    """ssh-keygen -Y sign over DATA in NAMESPACE, as an entry's base64 `sig`."""
    out = subprocess.run(["ssh-keygen", "-Y", "sign", "-q", "-f", private, "-n", namespace], input=data,
                         capture_output=True, check=True).stdout
    return base64.b64encode(out).decode()


def _ssh_entry(body: dict[str, Any], *sigs: tuple[str, str]) -> Entry:
    return make_entry(body, [{"format": "ssh", "signer": signer, "sig": sig} for signer, sig in sigs])


def test_ssh_signature_in_the_git_namespace_inside_an_entry(ssh: SshWorld) -> None:
    """A signature alice made for git (`-n git`, e.g. a signed commit's) is lifted into a ledger entry: the
    namespace is part of the signed message, so it is no vaultmesh signature."""
    body = deploy_body(ssh.repo, "lifted from a git signature")
    inject_line(ssh.repo, _ssh_entry(body, (ssh.fpr["alice"], _sshsig(ssh.alice, canonical(body), "git"))),
                key(ssh.alice, "ssh"))
    assert "VM-SIG-INVALID" in _bad(ssh.repo, "--all")


def test_ssh_signature_over_another_body(ssh: SshWorld) -> None:
    """alice's genuine SSH signature over one deploy body, attached to another deploy body."""
    signed, shown = deploy_body(ssh.repo, "what alice signed"), deploy_body(ssh.repo, "what is shown")
    inject_line(ssh.repo, _ssh_entry(shown, (ssh.fpr["alice"], _sshsig(ssh.alice, canonical(signed)))),
                key(ssh.alice, "ssh"))
    assert "VM-SIG-INVALID" in _bad(ssh.repo, "--all")


def test_ssh_pinned_key_signs_for_another_declared_signer(ssh: SshWorld) -> None:
    """alice (pinned) signs a 2-of-2 release twice, once declared as herself and once as bob: one key must
    not count as two signers, and the forged 'bob' signature is invalid."""
    tag(ssh.repo, "v2.0")
    vm_ok(ssh.repo, "record", "v2.0")
    real = entries(ssh.repo)[-1]
    git(ssh.repo, "tag", "-a", "v2.1", "-m", "v2.1", "v2.0^{commit}")
    body = dict(real.body, recorded_at=now_rfc3339(), version="v2.1",
                subject=dict(real.body["subject"], ref="refs/tags/v2.1", tag=git(ssh.repo, "rev-parse", "v2.1")))
    forged = make_entry(body, [{"format": "ssh", "signer": ssh.fpr["alice"], "sig": _sshsig(ssh.alice, canonical(body))},
                               {"format": "ssh", "signer": ssh.fpr["bob"], "sig": _sshsig(ssh.alice, canonical(body))}])
    inject_line(ssh.repo, forged, key(ssh.alice, "ssh"))
    got = _bad(ssh.repo, "v2.1")
    # the forged entry counts for nothing (v2.0's own pending release, on the same commit, is not v2.1's receipt)
    assert "VM-SIG-INVALID" in got, got


def test_ssh_rsa_signature_declared_as_the_ed25519_signer(ssh: SshWorld) -> None:
    """bob's RSA key signs a deploy declared as alice's ed25519 key (key-type confusion: the signature's own
    embedded key is not the one the policy pins for the declared signer)."""
    body = deploy_body(ssh.repo, "rsa as ed25519")
    inject_line(ssh.repo, _ssh_entry(body, (ssh.fpr["alice"], _sshsig(ssh.bob, canonical(body)))),
                key(ssh.alice, "ssh"))
    assert "VM-SIG-INVALID" in _bad(ssh.repo, "--all")


def test_ssh_key_line_whose_type_lies_is_refused(ssh: SshWorld) -> None:
    """A key line saying ssh-ed25519 whose data is bob's RSA key (type confusion): `add-signer` must refuse it, and a policy entry pinning it (validly signed) is not adopted by verify."""
    rsa_blob = Path(ssh.bob + ".pub").read_text().split()[1]
    lying = f"ssh-ed25519 {rsa_blob} liar@example.org"
    before = ledger_refs(ssh.repo)
    # (the code reads as if a file were unreadable: the argument is a key line, not a path)
    err = refused(vm(ssh.repo, "policy", "add-signer", "liar", "--ssh-key", lying), "VM-FILE-UNREADABLE")
    assert "'ssh-rsa'" in err
    assert ledger_refs(ssh.repo) == before
    pol = [e for e in entries(ssh.repo) if e.type == "policy"][-1].body
    signers = [*pol["signers"], {"name": "liar", "format": "ssh", "fingerprint": ssh.fpr["bob"],
                                 "public_key": lying, "types": ["*"]}]
    body = dict(pol, recorded_at=now_rfc3339(), message="pin a lying key", signers=signers)
    inject(ssh.repo, body, [key(ssh.alice, "ssh")], key(ssh.alice, "ssh"))
    assert "VM-POLICY-INVALID" in _bad(ssh.repo, "--all")


def test_ssh_signature_labelled_openpgp(ssh: SshWorld) -> None:
    """Format confusion: alice's SSH signature declared as an OpenPGP one under her SSH fingerprint."""
    body = deploy_body(ssh.repo, "format confusion")
    entry = make_entry(body, [{"format": "openpgp", "signer": ssh.fpr["alice"],
                               "sig": _sshsig(ssh.alice, canonical(body))}])
    inject_line(ssh.repo, entry, key(ssh.alice, "ssh"))
    assert _bad(ssh.repo, "--all") == {"VM-SIG-MALFORMED"}


# --- OpenPGP expiry ------------------------------------------------------------------------------------------


T0 = datetime(2020, 1, 1, tzinfo=UTC)  # dave's key: made 2020-01-01, expires 2020-01-02T02:00


def _faked(when: datetime) -> list[str]:
    return ["--faked-system-time", when.strftime("%Y%m%dT%H%M%S") + "!"]


def _gpg(home: str, *args: str, input: bytes | None = None) -> bytes:
    return subprocess.run(["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", "", *args],
                          env=dict(os.environ, GNUPGHOME=home), input=input, capture_output=True, check=True).stdout


def _pgp_sig(home: str, fpr: str, data: bytes, when: datetime) -> str:
    return base64.b64encode(_gpg(home, *_faked(when), "-u", fpr, "--detach-sign", "-o", "-", input=data)).decode()


@dataclass
class PgpWorld:
    repo: Path
    home: str
    alice: GpgKey
    bob: GpgKey
    mallory: GpgKey
    dave: str  # fingerprint of the expired key


@pytest.fixture(scope="module")
def pgp_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgpWorld]:
    """alice's ledger (genesis), bob pinned, dave pinned (his key expired in 2020); every threshold 1."""
    home = make_gpg_home()
    base = tmp_path_factory.mktemp("pgpworld")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in {**GIT_ENV, "GNUPGHOME": home, "HOME": str(base)}.items():
                mp.setenv(k, v)
            mp.delenv("SOURCE_DATE_EPOCH", raising=False)
            alice, bob, mallory = (gen_gpg_key(home, n) for n in ("Alice", "Bob", "Mallory"))
            uid = "Dave <dave@example.org>"
            _gpg(home, *_faked(T0), "--quick-gen-key", uid, "ed25519", "sign", "never")
            listing = _gpg(home, "--with-colons", "--list-keys", uid).decode()
            dave = [ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:")][0]
            _gpg(home, *_faked(T0.replace(hour=2)), "--quick-set-expire", dave, "1d")
            repo = make_repo(base / "repo")
            git(repo, "config", "vaultmesh.signingKey", alice.fingerprint)
            vm_ok(repo, "init", "--name", "alice")
            vm_ok(repo, "policy", "add-signer", "bob", "--key", bob.fingerprint)
            _pin_expired(repo, home, dave, alice)
            yield PgpWorld(repo, home, alice, bob, mallory, dave)
    finally:
        kill_agent(home)
        shutil.rmtree(home, ignore_errors=True)


def _pin_expired(repo: Path, home: str, fpr: str, alice: GpgKey) -> None:
    """add-signer may refuse an expired key; pin it as alice would, with a policy entry she signs."""
    res = vm(repo, "policy", "add-signer", "dave", "--key", fpr)
    if res.returncode == 0:
        return
    pol = [e for e in entries(repo) if e.type == "policy"][-1].body
    armored = _gpg(home, "--armor", "--export", "--export-options", "export-minimal", fpr).decode()
    signers = [*pol["signers"], {"name": "dave", "format": "openpgp", "fingerprint": fpr, "public_key": armored,
                                 "types": ["*"]}]
    ka = key(alice.fingerprint)
    inject(repo, dict(pol, recorded_at=now_rfc3339(), message="pin dave", signers=signers), [ka], ka)


@pytest.fixture
def pgp(pgp_world: PgpWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PgpWorld:
    monkeypatch.setenv("GNUPGHOME", pgp_world.home)
    return PgpWorld(_copy(pgp_world.repo, tmp_path), pgp_world.home, pgp_world.alice, pgp_world.bob,
                    pgp_world.mallory, pgp_world.dave)


def _dave_deploy(w: PgpWorld, recorded_at: str, signed_at: datetime) -> None:
    body = dict(deploy_body(w.repo, f"dave at {recorded_at}"), recorded_at=recorded_at)
    entry = make_entry(body, [{"format": "openpgp", "signer": w.dave,
                               "sig": _pgp_sig(w.home, w.dave, canonical(body), signed_at)}])
    inject_line(w.repo, entry, key(w.alice.fingerprint))


def test_pgp_world_control(pgp: PgpWorld) -> None:
    """Control: the pristine ledger (with an expired key pinned) verifies."""
    rc, rep = verify_json(pgp.repo, "--all")
    assert rc == 0, failures(rep)


def test_backdated_signature_packet_in_an_entry_recorded_after_expiry(pgp: PgpWorld) -> None:
    """dave's expired key makes a signature whose packet time (faked) predates expiry, on an entry recorded
    today: the key had expired by the entry's own time."""
    _dave_deploy(pgp, now_rfc3339(), T0.replace(hour=3))
    assert "VM-SIG-KEY-EXPIRED" in _bad(pgp.repo, "--all")


def test_signature_made_after_expiry_on_a_backdated_entry(pgp: PgpWorld, tmp_path: Path) -> None:
    """The entry claims a time before expiry, but the signature packet was made after it. dave's holder
    extended the expiry in their own keyring (gpg refuses to sign with an expired key); the policy still pins
    the key as it was, expiring 2020-01-02."""
    from conftest import throwaway_gpg_home

    secret = _gpg(pgp.home, "--export-secret-keys", pgp.dave)
    with throwaway_gpg_home() as own:
        _gpg(own, "--import", input=secret)
        _gpg(own, *_faked(datetime(2020, 1, 5, tzinfo=UTC)), "--quick-set-expire", pgp.dave, "never")
        body = dict(deploy_body(pgp.repo, "dave, re-extended"), recorded_at="2020-01-01T03:00:00Z")
        sig = _pgp_sig(own, pgp.dave, canonical(body), datetime(2020, 1, 5, tzinfo=UTC))
    inject_line(pgp.repo, make_entry(body, [{"format": "openpgp", "signer": pgp.dave, "sig": sig}]),
                key(pgp.alice.fingerprint))
    assert "VM-SIG-KEY-EXPIRED" in _bad(pgp.repo, "--all")


def test_backdated_signature_and_recorded_at_behind_earlier_entries(pgp: PgpWorld) -> None:
    """Both times backdated to before dave's expiry (2020), appended after entries recorded today: the log
    order proves the entry was made after them, so after the key expired."""
    _dave_deploy(pgp, "2020-01-01T03:00:00Z", T0.replace(hour=3))
    assert _bad(pgp.repo, "--all") & {"VM-SIG-KEY-EXPIRED", "VM-ENTRY-MALFORMED", "VM-LOG-NOT-APPEND-ONLY"}


def test_key_expired_between_record_and_verify(tmp_path: Path, gnupghome: str) -> None:
    """A key made three days ago, expired yesterday: the ledger it signed (entries and checkpoints, signed
    while it was valid) still verifies today, and a new record with it is refused, changing nothing."""
    now = int(time.time())
    made = datetime.fromtimestamp(now - 3 * 86400, UTC)
    uid = "Erin <erin@example.org>"
    _gpg(gnupghome, *_faked(made), "--quick-gen-key", uid, "ed25519", "sign", "2d")
    listing = _gpg(gnupghome, "--with-colons", "--list-keys", uid).decode()
    erin = [ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:")][0]
    then = made.replace(tzinfo=None).strftime("%Y%m%dT%H%M%S")
    conf = Path(gnupghome, "gpg.conf")
    conf.write_text(f"faked-system-time {then}\n")  # gpg (which signs) lives three days ago; verify does not
    repo = make_repo(tmp_path / "repo")
    git(repo, "config", "vaultmesh.signingKey", erin)
    past = {"SOURCE_DATE_EPOCH": str(now - 3 * 86400 + 60)}
    vm_ok(repo, "init", env=past)
    vm_ok(repo, "record", "v1.0", env=past)
    vm_ok(repo, "record", "HEAD", "--environment", "prod", env=past)
    conf.unlink()
    rc, rep = verify_json(repo, "--all")
    assert rc == 0, failures(rep)
    before = ledger_refs(repo)
    refused(vm(repo, "record", "HEAD", "--environment", "late"), "VM-NO-SIGNING-KEY")
    assert ledger_refs(repo) == before


# --- policy: races, lock-outs, cosigns ----------------------------------------------------------------------


def test_concurrent_policy_apply_of_proposals_against_one_policy(pgp: PgpWorld, tmp_path: Path) -> None:
    """Three fully signed proposals made against the same policy, applied at the same moment: each is a full
    snapshot, so any two landing would silently revert one. Exactly one lands; the others are stale."""
    props = []
    for i, change in enumerate((["set-threshold", "deploy", "2"], ["set-threshold", "release", "2"],
                                ["add-signer", "mallory", "--key", pgp.mallory.fingerprint])):
        p = tmp_path / f"p{i}.json"
        vm_ok(pgp.repo, "policy", *change, "--propose", str(p))
        props.append(p)
    n_policies = sum(e.type == "policy" for e in entries(pgp.repo))
    procs = [subprocess.Popen([sys.executable, "-m", "git_vaultmesh", "policy", "apply", str(p)], cwd=pgp.repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in props]
    errs = [proc.communicate(timeout=120)[1] for proc in procs]
    results = [(proc.returncode, err) for proc, err in zip(procs, errs)]
    assert [rc for rc, _ in results].count(0) == 1, results
    for rc, err in results:
        assert "Traceback" not in err
        if rc:
            assert rc == 1 and "error: VM-POLICY-STALE" in err, err
    assert sum(e.type == "policy" for e in entries(pgp.repo)) == n_policies + 1
    rc, rep = verify_json(pgp.repo, "--all")
    assert rc == 0, failures(rep)


def _policy_body(w: PgpWorld, **changes: Any) -> dict[str, Any]:
    pol = [e for e in entries(w.repo) if e.type == "policy"][-1].body
    return dict(pol, recorded_at=now_rfc3339(), **changes)


def test_policy_where_no_one_may_sign_policy_changes(pgp: PgpWorld) -> None:
    """A validly signed policy that lets every signer sign releases only: nobody could ever change the policy
    again (lock-out). Not adopted; later entries stay under the old policy."""
    pol = _policy_body(pgp, message="lock out")
    pol["signers"] = [dict(s, types=["release"]) for s in pol["signers"]]
    ka = key(pgp.alice.fingerprint)
    inject(pgp.repo, pol, [ka], ka)
    assert "VM-POLICY-INVALID" in _bad(pgp.repo, "--all")


def test_policy_with_no_signers_and_removing_the_last_one(pgp: PgpWorld) -> None:
    """Removing every signer locks the ledger for good: the CLI refuses it and verify never adopts it."""
    ka = key(pgp.alice.fingerprint)
    inject(pgp.repo, _policy_body(pgp, message="empty", signers=[]), [ka], ka)
    assert "VM-POLICY-INVALID" in _bad(pgp.repo, "--all")


def test_policy_threshold_zero(pgp: PgpWorld) -> None:
    """A threshold of 0 would let an unsigned (or any) entry pass; it is never adopted."""
    ka = key(pgp.alice.fingerprint)
    inject(pgp.repo, _policy_body(pgp, message="zero", thresholds={"*": 1, "deploy": 0}), [ka], ka)
    assert "VM-POLICY-INVALID" in _bad(pgp.repo, "--all")


def test_remove_the_last_policy_signer_via_cli(pgp: PgpWorld) -> None:
    """With only alice able to sign anything, removing bob then alice would leave nobody: refused, unchanged."""
    vm_ok(pgp.repo, "policy", "remove-signer", "bob")
    vm_ok(pgp.repo, "policy", "remove-signer", "dave")
    before = ledger_refs(pgp.repo)
    res = vm(pgp.repo, "policy", "remove-signer", "alice")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "VM-POLICY-INVALID" in res.stderr, res.stderr
    assert ledger_refs(pgp.repo) == before


def test_cosign_of_a_cosign_does_not_count(pgp: PgpWorld) -> None:
    """Release threshold 2: bob co-signs alice's own cosign of her release instead of the release. A cosign of
    a cosign is not a signature on the release; it must be reported, and the release stays pending."""
    vm_ok(pgp.repo, "policy", "set-threshold", "release", "2")
    tag(pgp.repo, "v2.0")
    vm_ok(pgp.repo, "record", "v2.0")
    release = entries(pgp.repo)[-1]
    ka, kb = key(pgp.alice.fingerprint), key(pgp.bob.fingerprint)
    first = inject(pgp.repo, cosign_body(pgp.repo, release, "alice again"), [ka], ka)
    inject(pgp.repo, cosign_body(pgp.repo, first, "bob cosigns the cosign"), [kb], ka)
    rc, rep = verify_json(pgp.repo, "v2.0")
    pending = [c for c in failures(rep) if c["code"] == "VM-SIG-PENDING"]
    assert rc == 1 and pending and "missing: bob" in pending[0]["detail"], failures(rep)


def test_cosign_does_not_complete_a_policy_change(pgp: PgpWorld) -> None:
    """Policy threshold 2: a change pinning mallory, signed by alice alone, is not adopted; bob's later cosign
    of it must not adopt it after the fact (policy changes carry their threshold themselves), so mallory's
    deploy stays unpinned."""
    vm_ok(pgp.repo, "policy", "set-threshold", "policy", "2")
    ka, kb, km = key(pgp.alice.fingerprint), key(pgp.bob.fingerprint), key(pgp.mallory.fingerprint)
    pol = _policy_body(pgp, message="add mallory")
    armored = _gpg(pgp.home, "--armor", "--export", "--export-options", "export-minimal",
                   pgp.mallory.fingerprint).decode()
    pol["signers"] = [*pol["signers"], {"name": "mallory", "format": "openpgp", "fingerprint":
                                        pgp.mallory.fingerprint, "public_key": armored, "types": ["*"]}]
    change = inject(pgp.repo, pol, [ka], ka)
    inject(pgp.repo, cosign_body(pgp.repo, change, "bob completes the change"), [kb], ka)
    inject(pgp.repo, deploy_body(pgp.repo, "mallory deploys"), [km], ka)
    got = _bad(pgp.repo, "--all")
    assert "VM-POLICY-UNAUTHORIZED" in got and "VM-SIG-UNPINNED" in got, got
    shown = json.loads(vm_ok(pgp.repo, "policy", "show", "--json"))
    assert "mallory" not in [s["name"] for s in shown["signers"]]


# --- checkpoint notes, proof bundles, forged history ----------------------------------------------------------


def _replace_in_log(repo: Path, path: str, content: bytes) -> None:
    """A new log commit on top, the same tree with PATH holding CONTENT (plumbing, as an attacker would)."""
    new = git(repo, "hash-object", "-w", "--stdin", input=content)
    env = dict(os.environ, GIT_INDEX_FILE=str(repo / ".git" / "tamper-index"))
    subprocess.run(["git", "read-tree", "refs/vaultmesh/log"], cwd=repo, env=env, check=True)
    subprocess.run(["git", "update-index", "--add", "--cacheinfo", f"100644,{new},{path}"], cwd=repo, env=env,
                   check=True)
    tree = subprocess.run(["git", "write-tree"], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()
    git(repo, "update-ref", "refs/vaultmesh/log",
        git(repo, "commit-tree", tree, "-p", "refs/vaultmesh/log", "-m", "tamper"))


def _checkpoint(repo: Path) -> str:
    return git(repo, "cat-file", "blob", "refs/vaultmesh/log:checkpoint") + "\n"


def test_checkpoint_note_while_the_policy_pins_no_note_key(pgp: PgpWorld) -> None:
    """A checkpoint.note signed by the attacker's own note key, in a ledger whose policy pins none: a C2SP
    consumer reading the note would take the attacker's key for the log's."""
    from git_vaultmesh.note import NoteKey

    log_id = entries(pgp.repo)[0].body["log"]
    note = NoteKey.generate(f"vaultmesh/{log_id}").sign_note(_checkpoint(pgp.repo))
    _replace_in_log(pgp.repo, "checkpoint.note", note.encode())
    assert "VM-CHECKPOINT-SIG" in _bad(pgp.repo, "--all")


def test_checkpoint_note_by_a_rotated_out_note_key(pgp: PgpWorld) -> None:
    """The note key is rotated (k1 -> k2, both made by `policy set-note-key`); whoever kept k1 signs the head
    checkpoint as a note with it, in a new log commit on top."""
    from git_vaultmesh.note import NoteKey

    key_file = pgp.repo / ".git" / "vaultmesh" / "note.key"
    vm_ok(pgp.repo, "policy", "set-note-key")
    k1 = NoteKey.parse(key_file.read_text().strip())
    key_file.unlink()
    vm_ok(pgp.repo, "policy", "set-note-key")  # a fresh local key, k2, replaces k1 in the policy
    vm_ok(pgp.repo, "record", "HEAD", "--environment", "prod")
    rc, rep = verify_json(pgp.repo, "--all")
    assert rc == 0, failures(rep)
    _replace_in_log(pgp.repo, "checkpoint.note", k1.sign_note(_checkpoint(pgp.repo)).encode())
    assert "VM-CHECKPOINT-SIG" in _bad(pgp.repo)


def test_bundle_whose_release_index_names_the_policy_entry(pgp: PgpWorld, tmp_path: Path) -> None:
    """A proof bundle edited so that its `release` points at the genesis policy entry it carries: a policy
    is not a release, and its signature must not vouch for the commit."""
    vm_ok(pgp.repo, "record", "v1.0")
    out = tmp_path / "b.json"
    vm_ok(pgp.repo, "prove", "HEAD", "--in", "v1.0", "-o", str(out))
    bundle = json.loads(out.read_text())
    policy_idx = next(e["index"] for e in bundle["entries"] if '"type":"policy"' in e["line"])
    bundle["release"] = policy_idx
    out.write_text(json.dumps(bundle))
    empty = tmp_path / "nowhere"
    empty.mkdir()
    res = vm(empty, "check-proof", "--trust-root", pgp.alice.fingerprint, str(out), "--json")
    assert res.returncode == 1 and "Traceback" not in res.stderr, (res.stdout, res.stderr)
    got = {c["code"] for c in json.loads(res.stdout).get("checks", []) if not c["ok"]}
    assert got == {"VM-PROOF-MALFORMED"}, (res.stdout, res.stderr)


def test_release_with_a_forged_history_root(pgp: PgpWorld, tmp_path: Path) -> None:
    """A validly signed release of v2.0 whose history names another root (over other commits): the receipt
    would vouch for a history that is not v2.0's."""
    tag(pgp.repo, "v2.0")
    scratch = tmp_path / "scratch"
    shutil.copytree(pgp.repo, scratch, symlinks=True)
    vm_ok(scratch, "record", "v2.0")
    body = dict(entries(scratch)[-1].body, recorded_at=now_rfc3339())
    body["history"] = dict(body["history"], root="ab" * 32)
    ka = key(pgp.alice.fingerprint)
    inject(pgp.repo, body, [ka], ka)
    assert "VM-HISTORY-MISMATCH" in _bad(pgp.repo, "v2.0")
