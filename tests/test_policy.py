"""Trust policy with real gpg keys: k-of-n thresholds, cosigns, staged policy changes, rotation.

Several users = several keys in one throwaway GNUPGHOME; each command runs as one of them through
`vaultmesh.signingKey` given on the command line's config (as `git -c` would). Entries the CLI refuses to write
are injected with ledger.append to show that `verify` does not count them either.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from git_vaultmesh import cli, signing
from git_vaultmesh.entry import canonical, make_entry, parse_line

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
    ok_as,
    refused,
    run_as,
    tag,
    verify_json,
)


@dataclass
class Team:
    repo: Path
    home: str
    alice: GpgKey
    bob: GpgKey
    carol: GpgKey  # may sign release and deploy only
    mallory: GpgKey  # in the keyring, never in the policy


@pytest.fixture(scope="module")
def team_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    """Built once per module (keys and four appends are the slow part); each test works on a copy."""
    home = make_gpg_home()
    base = tmp_path_factory.mktemp("team")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**GIT_ENV, "GNUPGHOME": home, "HOME": str(base)}.items():
            mp.setenv(k, v)
        mp.delenv("SOURCE_DATE_EPOCH", raising=False)
        repo = make_repo(base / "repo")
        t = Team(repo, home, *(gen_gpg_key(home, n) for n in ("Alice", "Bob", "Carol", "Mallory")))
        git(repo, "config", "vaultmesh.signingKey", t.alice.fingerprint)
        vm_ok(repo, "init", "--name", "alice")
        vm_ok(repo, "policy", "add-signer", "bob", "--key", t.bob.fingerprint)
        vm_ok(repo, "policy", "add-signer", "carol", "--key", t.carol.fingerprint, "--types", "release,deploy")
        vm_ok(repo, "policy", "set-threshold", "release", "2")
    yield t
    kill_agent(home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def team(team_template: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Team:
    """alice's ledger; bob and carol pinned; releases need 2 of {alice, bob, carol}; policy changes 1."""
    repo = tmp_path / "repo"
    shutil.copytree(team_template.repo, repo, symlinks=True)
    monkeypatch.setenv("GNUPGHOME", team_template.home)
    return dataclasses.replace(team_template, repo=repo)


def log_rows(repo: Path) -> list[dict[str, object]]:
    return json.loads(vm_ok(repo, "log", "--json"))  # type: ignore[no-any-return]


def test_two_of_three_release_is_pending_until_a_second_signer_cosigns(team: Team) -> None:
    r = team.repo
    tag(r, "v2.0")
    out = vm_ok(r, "record", "v2.0")
    assert "pending signatures: 1 of 2" in out

    rc, rep = verify_json(r, "v2.0")
    assert rc == 1 and [c["code"] for c in failures(rep)] == ["VM-SIG-PENDING"]
    detail = failures(rep)[0]["detail"]
    assert "1 of required 2" in detail and "present: alice" in detail and "missing: bob, carol" in detail
    text = vm(r, "verify", "v2.0")
    assert text.returncode == 1 and "pending signatures" in text.stdout and "VM-SIG-PENDING" in text.stdout

    assert "[pending signatures 1/2; missing: bob, carol]" in vm_ok(r, "log").splitlines()[0]
    assert log_rows(r)[0]["signatures"] == {"have": 1, "need": 2, "pending": True, "signers": ["alice"],
                                            "missing": ["bob", "carol"]}

    before = ledger_refs(r)
    refused(run_as(r, team.alice.fingerprint, "cosign", "v2.0"), "VM-ALREADY-SIGNED")
    err = refused(run_as(r, team.mallory.fingerprint, "cosign", "v2.0"), "VM-SIGNER-NOT-IN-POLICY")
    assert team.mallory.fingerprint in err
    refused(run_as(r, team.bob.fingerprint, "cosign", "v1.0"), "VM-NOT-RECORDED")
    refused(run_as(r, team.bob.fingerprint, "cosign", "0123456789abcdef"), "VM-NOT-RECORDED")
    refused(run_as(r, team.bob.fingerprint, "cosign", "#0"), "VM-USAGE")  # policy: staged, never cosigned
    assert ledger_refs(r) == before, "a refused cosign appends nothing"

    # carol may sign releases (not "cosign" by name): her cosign counts for the release
    out = ok_as(r, team.carol.fingerprint, "cosign", "v2.0", "-m", "checked the tarball")
    assert "2 of 2 (alice, carol): threshold met" in out
    refused(run_as(r, team.carol.fingerprint, "cosign", "v2.0"), "VM-ALREADY-SIGNED")
    rc, rep = verify_json(r, "v2.0")
    assert rc == 0, failures(rep)
    rows = log_rows(r)
    assert rows[0]["signatures"] is None  # the cosign itself has no threshold
    assert rows[1]["signatures"] == {"have": 2, "need": 2, "pending": False, "signers": ["alice", "carol"],
                                     "missing": ["bob"]}
    assert "pending" not in vm_ok(r, "log")


def test_verify_does_not_count_cosigns_the_cli_refuses(team: Team) -> None:
    r = team.repo
    tag(r, "v2.0")
    vm_ok(r, "record", "v2.0")
    target = entries(r)[-1]
    dave = gen_gpg_key(team.home, "Dave")
    vm_ok(r, "policy", "add-signer", "dave", "--key", dave.fingerprint)
    err = refused(run_as(r, dave.fingerprint, "cosign", "v2.0"), "VM-SIGNER-NOT-IN-POLICY")
    assert "when entry #" in err and "cannot sign the past" in err

    alice = key(team.alice.fingerprint)
    for signer, msg in ((alice, "alice again"), (alice, "and again"), (key(team.mallory.fingerprint), "unpinned"),
                        (key(dave.fingerprint), "added later")):
        inject(r, cosign_body(r, target, msg), [signer], appender=alice)

    rc, rep = verify_json(r, "v2.0")
    assert rc == 1 and codes(rep) == {"VM-SIG-PENDING", "VM-SIG-UNPINNED"}
    pending = [c for c in failures(rep) if c["code"] == "VM-SIG-PENDING"]
    assert len(pending) == 1 and "1 of required 2" in pending[0]["detail"]
    assert "present: alice;" in pending[0]["detail"]
    unpinned = [c for c in failures(rep) if c["code"] == "VM-SIG-UNPINNED"]
    assert len(unpinned) == 1 and team.mallory.fingerprint[-16:] in unpinned[0]["detail"]
    # the cheap listing agrees: only claimed signers pinned at both positions are counted
    rel = next(x for x in log_rows(r) if x["seq"] == 5)
    assert rel["signatures"]["have"] == 1  # type: ignore[index]


def test_policy_change_below_threshold_is_refused_and_later_entries_keep_the_old_policy(
        team: Team, tmp_path: Path) -> None:
    r = team.repo
    vm_ok(r, "policy", "set-threshold", "policy", "2")  # alice alone may still do this: threshold was 1
    before = ledger_refs(r)
    err = refused(vm(r, "policy", "add-signer", "mallory", "--key", team.mallory.fingerprint),
                  "VM-POLICY-UNAUTHORIZED")
    assert "--propose" in err
    add, lower = tmp_path / "add.json", tmp_path / "lower.json"
    vm_ok(r, "policy", "add-signer", "mallory", "--key", team.mallory.fingerprint, "--propose", str(add))
    vm_ok(r, "policy", "set-threshold", "release", "1", "--propose", str(lower))
    err = refused(vm(r, "policy", "apply", str(add)), "VM-POLICY-UNAUTHORIZED")
    assert "missing: bob" in err
    assert ledger_refs(r) == before, "apply refuses before appending"

    # forced in anyway: verify rejects both and keeps judging by the policy before them
    alice = key(team.alice.fingerprint)
    for f in (add, lower):
        inject_line(r, parse_line(f.read_bytes().rstrip(b"\n")), alice)
    shown = json.loads(vm_ok(r, "policy", "show", "--json"))
    assert shown["thresholds"] == {"*": 1, "release": 2, "policy": 2}
    assert [x["code"] for x in shown["rejected"]] == ["VM-POLICY-UNAUTHORIZED"] * 2
    assert "[NOT ADOPTED: 1/2 signatures]" in vm_ok(r, "log").splitlines()[0]
    tag(r, "v2.0")
    vm_ok(r, "record", "v2.0")  # the newest (unadopted) policy says 1 signature; verify says 2
    inject(r, deploy_body(r, "by mallory"), [key(team.mallory.fingerprint)], appender=alice)

    rc, rep = verify_json(r, "--all")
    assert rc == 1 and codes(rep) == {"VM-POLICY-UNAUTHORIZED", "VM-SIG-PENDING", "VM-SIG-UNPINNED"}
    unauthorized = [c["detail"] for c in failures(rep) if c["code"] == "VM-POLICY-UNAUTHORIZED"]
    assert len(unauthorized) == 2 and all("missing: bob" in d for d in unauthorized)
    assert any("entry #" in c["detail"] and "present: alice" in c["detail"]
               for c in failures(rep) if c["code"] == "VM-SIG-PENDING")


def test_staged_policy_change(team: Team, tmp_path: Path) -> None:
    r = team.repo
    vm_ok(r, "policy", "set-threshold", "policy", "2")
    p, q = str(tmp_path / "p.json"), str(tmp_path / "q.json")
    out = vm_ok(r, "policy", "set-threshold", "release", "1", "--propose", p)
    assert "1 of required 2" in out and f"policy sign {p}" in out
    refused(vm(r, "policy", "sign", p), "VM-ALREADY-SIGNED")
    refused(run_as(r, team.carol.fingerprint, "policy", "sign", p), "VM-SIGNER-NOT-IN-POLICY")  # types

    # a signer sees the change computed from the snapshots, not the proposer's summary
    out = ok_as(r, team.bob.fingerprint, "policy", "sign", p)
    assert "~ threshold release: 2 -> 1" in out and f"policy apply {p}" in out

    # a signed proposal edited afterwards is refused before anything is appended
    obj = json.loads(Path(p).read_text())
    obj["body"]["thresholds"]["deploy"] = 1
    forged = tmp_path / "forged.json"
    forged.write_bytes(canonical(obj) + b"\n")
    before = ledger_refs(r)
    refused(vm(r, "policy", "apply", str(forged)), "VM-SIG-INVALID")
    assert ledger_refs(r) == before

    # another change applied first makes p stale: a snapshot would silently revert it
    vm_ok(r, "policy", "set-threshold", "deploy", "2", "--propose", q)
    ok_as(r, team.bob.fingerprint, "policy", "sign", q)
    ok_as(r, team.carol.fingerprint, "policy", "apply", q)  # any pinned signer may append it
    refused(vm(r, "policy", "apply", p), "VM-POLICY-STALE")
    refused(run_as(r, team.bob.fingerprint, "policy", "sign", q), "VM-POLICY-STALE")  # already applied
    assert "already applied" in vm_ok(r, "policy", "apply", q)

    vm_ok(r, "policy", "set-threshold", "release", "1", "--propose", p)
    signed = json.loads(ok_as(r, team.bob.fingerprint, "policy", "sign", p, "--json"))
    assert signed["signatures"] == {"have": 2, "need": 2, "signers": ["alice", "bob"], "missing": []}
    applied = json.loads(vm_ok(r, "policy", "apply", p, "--json"))
    assert applied["appended"] is True
    shown = json.loads(vm_ok(r, "policy", "show", "--json"))
    assert shown["thresholds"] == {"*": 1, "release": 1, "policy": 2, "deploy": 2}
    assert shown["entry"]["id"] == applied["entry"] and shown["rejected"] == []
    rc, rep = verify_json(r, "--all")
    assert rc == 0, failures(rep)


def test_rotation_keeps_old_signatures_and_refuses_new_ones(team: Team) -> None:
    r = team.repo
    vm_ok(r, "record", "v1.0")
    ok_as(r, team.bob.fingerprint, "cosign", "v1.0")
    ok_as(r, team.bob.fingerprint, "policy", "remove-signer", "alice")
    shown = json.loads(vm_ok(r, "policy", "show", "--json"))
    assert [s["name"] for s in shown["signers"]] == ["bob", "carol"]

    tag(r, "v2.0")
    err = refused(vm(r, "record", "v2.0"), "VM-SIGNER-NOT-IN-POLICY")
    assert team.alice.fingerprint in err and "policy add-signer" in err
    bob, alice = key(team.bob.fingerprint), key(team.alice.fingerprint)
    old_release = entries(r)[4]
    assert old_release.type == "release"
    inject(r, deploy_body(r, "alice after removal"), [alice], appender=bob)
    inject(r, cosign_body(r, old_release, "alice cosigns after removal"), [alice], appender=bob)

    rc, rep = verify_json(r, "v1.0")  # alice's old release (and its cosign by bob) still verify...
    assert "VM-SIG-PENDING" not in codes(rep) and "VM-SIG-INVALID" not in codes(rep)
    assert codes(rep) == {"VM-SIG-UNPINNED"}  # ...but her new cosign on it is refused
    rc, rep = verify_json(r, "--all")
    assert rc == 1 and codes(rep) == {"VM-SIG-UNPINNED"}
    assert len(failures(rep)) == 2 and all(team.alice.fingerprint in c["detail"] for c in failures(rep))


def test_record_refuses_a_signer_outside_their_types(team: Team) -> None:
    r = team.repo
    erin = gen_gpg_key(team.home, "Erin")
    vm_ok(r, "policy", "add-signer", "erin", "--key", erin.fingerprint, "--types", "deploy")
    before = ledger_refs(r)
    err = refused(run_as(r, erin.fingerprint, "record", "v1.0"), "VM-SIGNER-NOT-IN-POLICY")
    assert "may sign deploy, not release" in err
    assert ledger_refs(r) == before
    ok_as(r, erin.fingerprint, "record", "v1.0", "--type", "deploy")
    refused(run_as(r, erin.fingerprint, "cosign", "#4"), "VM-USAGE")  # #4 is a policy entry
    rc, rep = verify_json(r, "--all")
    assert rc == 0, failures(rep)
    # a cosign is judged by the co-signed entry's type: erin's on a release is refused, and not counted
    tag(r, "v2.0")
    vm_ok(r, "record", "v2.0")
    err = refused(run_as(r, erin.fingerprint, "cosign", "v2.0"), "VM-SIGNER-NOT-IN-POLICY")
    assert "may sign deploy, not release" in err
    inject(r, cosign_body(r, entries(r)[-1], "erin"), [key(erin.fingerprint)], appender=key(erin.fingerprint))
    rc, rep = verify_json(r, "v2.0")
    assert rc == 1 and codes(rep) == {"VM-SIG-NOT-AUTHORIZED", "VM-SIG-PENDING"}


def test_openpgp_subkey_maps_to_primary_and_expiry_is_judged_at_entry_time(repo: Path, gnupghome: str) -> None:
    alice = gen_gpg_key(gnupghome, "Alice", expire="1d")
    bob = gen_gpg_key(gnupghome, "Bob")
    env = dict(os.environ, GNUPGHOME=gnupghome)
    subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-add-key",
                    bob.fingerprint, "ed25519", "sign", "never"], env=env, check=True, capture_output=True)
    listing = subprocess.run(["gpg", "--with-colons", "--list-keys", bob.fingerprint], env=env, check=True,
                             capture_output=True, text=True).stdout
    sub = [ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:")][-1]
    assert sub != bob.fingerprint
    git(repo, "config", "vaultmesh.signingKey", alice.fingerprint)
    vm_ok(repo, "init")
    vm_ok(repo, "policy", "add-signer", "bob", "--key", sub)  # the subkey names bob's primary key
    shown = json.loads(vm_ok(repo, "policy", "show", "--json"))
    assert shown["signers"][1]["fingerprint"] == bob.fingerprint
    ok_as(repo, sub + "!", "record", "v1.0")  # signed by the subkey itself
    tag(repo, "v2.0")
    vm_ok(repo, "record", "HEAD", "--type", "deploy")
    rc, rep = verify_json(repo, "--all")
    assert rc == 0, failures(rep)
    # an entry dated after alice's key expired fails, though gpg signed it today; earlier ones stay valid
    later = dict(os.environ, SOURCE_DATE_EPOCH=str(int(time.time()) + 3 * 86400))
    vm_ok(repo, "record", "HEAD", "--type", "deploy", "-m", "late", env=later)
    rc, rep = verify_json(repo, "--all")
    assert rc == 1 and codes(rep) == {"VM-SIG-KEY-EXPIRED"} and len(failures(rep)) == 1
    assert verify_json(repo, "v1.0")[0] == 0


def test_policy_show_json_is_stable_and_documented(team: Team) -> None:
    r = team.repo
    first = vm_ok(r, "policy", "show", "--json")
    assert vm_ok(r, "policy", "show", "--json") == first
    shown = json.loads(first)
    assert list(shown) == ["schema", "log", "entry", "signers", "thresholds", "effective", "tsas",
                           "tokens_required", "rejected", "trust_root"]
    assert shown["schema"] == "vaultmesh-policy/1"
    assert list(shown["entry"]) == ["seq", "id", "body_digest", "recorded_at"] and shown["entry"]["seq"] == 3
    assert [list(s) for s in shown["signers"]] == [["name", "format", "fingerprint", "public_key", "types"]] * 3
    assert shown["effective"]["release"] == {"threshold": 2, "signers": ["alice", "bob", "carol"]}
    assert shown["effective"]["policy"] == {"threshold": 1, "signers": ["alice", "bob"]}
    assert shown["trust_root"] == team.alice.fingerprint and shown["tsas"] == [] and shown["rejected"] == []
    text = vm_ok(r, "policy", "show")
    assert "release   2 of 3 (alice, bob, carol)" in text
    doc = (Path(__file__).resolve().parents[1] / "docs" / "policy.md").read_text()
    for field in [*shown, *shown["entry"], *shown["signers"][0], "threshold", "signers"]:
        assert f"`{field}`" in doc, f"docs/policy.md does not document {field}"


def test_log_counts_pending_without_verifying_signatures(team: Team, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    r = team.repo
    tag(r, "v2.0")
    vm_ok(r, "record", "v2.0")

    def no_verify(*_a: object, **_k: object) -> None:
        raise AssertionError("log must not verify signatures")

    monkeypatch.setattr(signing.Verifier, "verify", no_verify)
    monkeypatch.setattr(signing, "_run", no_verify)
    monkeypatch.chdir(r)
    assert cli.main(["log", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["signatures"]["pending"] is True


def test_cosign_entry_format(team: Team) -> None:
    r = team.repo
    vm_ok(r, "record", "v1.0")
    out = json.loads(ok_as(r, team.bob.fingerprint, "cosign", "v1.0", "--json"))
    es = entries(r)
    cos, target = es[-1], es[-2]
    assert out["entry"] == cos.id and out["target"] == target.id and out["signatures"]["pending"] is False
    assert set(cos.body) == {"type", "log", "recorded_at", "entry", "message"}
    assert cos.body["entry"] == target.body_digest and cos.body["log"] == target.body["log"]
    assert cos.body["message"] == "cosign by bob"
    assert [s["signer"] for s in cos.sigs] == [team.bob.fingerprint]
    assert make_entry(cos.body, cos.sigs).line == cos.line
