"""The trust policy with SSH signers (ssh-keygen -Y, namespace "vaultmesh"), alone and mixed with OpenPGP.

The same flows as test_policy.py: k-of-n thresholds with cosigns, staged policy changes, rotation; plus the
guarantee that the allowed-signers file comes from the policy only, never from the user's git/ssh config.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import GpgKey, git, vm, vm_ok
from policy_kit import (
    codes,
    cosign_body,
    deploy_body,
    entries,
    failures,
    inject,
    key,
    ok_as,
    refused,
    run_as,
    ssh_keypair,
    tag,
    verify_json,
)


def test_ssh_only_ledger_thresholds_cosigns_staging_and_rotation(repo: Path, tmp_path: Path) -> None:
    (alice, a_fpr), (bob, b_fpr), (carol, c_fpr), (mallory, m_fpr) = (
        ssh_keypair(tmp_path, n) for n in ("alice", "bob", "carol", "mallory"))
    # git's own SSH signing settings are honoured: gpg.format=ssh with user.signingkey
    git(repo, "config", "gpg.format", "ssh")
    git(repo, "config", "user.signingkey", alice + ".pub")
    out = json.loads(vm_ok(repo, "init", "--json"))
    assert out["trust_root"] == a_fpr and out["signer"] == "alice"
    vm_ok(repo, "policy", "add-signer", "bob", "--ssh-key", bob + ".pub")
    vm_ok(repo, "policy", "add-signer", "carol", "--ssh-key", Path(carol + ".pub").read_text(), "--types", "release")
    vm_ok(repo, "policy", "set-threshold", "release", "2")
    shown = json.loads(vm_ok(repo, "policy", "show", "--json"))
    assert [(s["name"], s["format"], s["fingerprint"]) for s in shown["signers"]] == [
        ("alice", "ssh", a_fpr), ("bob", "ssh", b_fpr), ("carol", "ssh", c_fpr)]

    tag(repo, "v2.0")
    vm_ok(repo, "record", "v2.0")
    rc, rep = verify_json(repo, "v2.0")
    assert rc == 1 and codes(rep) == {"VM-SIG-PENDING"}
    assert "present: alice; missing: bob, carol" in failures(rep)[0]["detail"]
    refused(run_as(repo, mallory, "cosign", "v2.0", fmt="ssh"), "VM-SIGNER-NOT-IN-POLICY")
    refused(run_as(repo, alice, "cosign", "v2.0", fmt="ssh"), "VM-ALREADY-SIGNED")
    ok_as(repo, carol, "cosign", "v2.0", fmt="ssh")
    rc, rep = verify_json(repo, "v2.0")
    assert rc == 0, failures(rep)

    # injected cosigns by the same signer again and by an unpinned key do not count, even with that key in
    # the user's allowed-signers file (git's gpg.ssh.allowedSignersFile and ~/.ssh/allowed_signers)
    allowed = f'mallory@example.org namespaces="vaultmesh" {Path(mallory + ".pub").read_text().strip()}\n'
    (tmp_path / "allowed").write_text(allowed)
    git(repo, "config", "gpg.ssh.allowedSignersFile", str(tmp_path / "allowed"))
    (tmp_path / "home" / ".ssh").mkdir(parents=True, exist_ok=True)
    (tmp_path / "home" / ".ssh" / "allowed_signers").write_text(allowed)
    tag(repo, "v3.0")
    vm_ok(repo, "record", "v3.0")
    target = entries(repo)[-1]
    ka = key(alice, "ssh")
    inject(repo, cosign_body(repo, target, "alice again"), [ka], appender=ka)
    inject(repo, cosign_body(repo, target, "mallory"), [key(mallory, "ssh")], appender=ka)
    rc, rep = verify_json(repo, "v3.0")
    assert rc == 1 and codes(rep) == {"VM-SIG-PENDING", "VM-SIG-UNPINNED"}
    assert any(m_fpr in c["detail"] for c in failures(rep) if c["code"] == "VM-SIG-UNPINNED")
    ok_as(repo, bob, "cosign", "v3.0", fmt="ssh")  # a real second signer still completes it

    # rotation through the staging flow: policy changes need 2 of alice, bob, dave
    dave, _ = ssh_keypair(tmp_path, "dave")
    vm_ok(repo, "policy", "add-signer", "dave", "--ssh-key", dave + ".pub")
    vm_ok(repo, "policy", "set-threshold", "policy", "2")
    proposal = str(tmp_path / "remove-alice.json")
    refused(vm(repo, "policy", "remove-signer", "alice"), "VM-POLICY-UNAUTHORIZED")
    vm_ok(repo, "policy", "remove-signer", "alice", "--propose", proposal)
    refused(vm(repo, "policy", "apply", proposal), "VM-POLICY-UNAUTHORIZED")
    refused(run_as(repo, carol, "policy", "sign", proposal, fmt="ssh"), "VM-SIGNER-NOT-IN-POLICY")
    ok_as(repo, dave, "policy", "sign", proposal, fmt="ssh")
    ok_as(repo, bob, "policy", "apply", proposal, fmt="ssh")

    refused(vm(repo, "record", "v1.0"), "VM-SIGNER-NOT-IN-POLICY")
    inject(repo, deploy_body(repo, "alice after removal"), [ka], appender=key(bob, "ssh"))
    rc, rep = verify_json(repo, "v2.0")  # what alice signed while pinned still verifies
    assert rc == 0, failures(rep)
    rc, rep = verify_json(repo, "v3.0")  # complete with bob's cosign; mallory's injected one still reported
    assert codes(rep) == {"VM-SIG-UNPINNED"} and m_fpr in failures(rep)[0]["detail"]
    rc, rep = verify_json(repo, "--all")
    assert codes(rep) == {"VM-SIG-UNPINNED"}
    assert sorted(fpr for c in failures(rep) for fpr in (a_fpr, m_fpr) if fpr in c["detail"]) == sorted([a_fpr, m_fpr])


def test_mixed_ssh_and_openpgp_signers(repo: Path, gpg_key: GpgKey, tmp_path: Path) -> None:
    alice = gpg_key  # OpenPGP, the genesis signer
    bob, b_fpr = ssh_keypair(tmp_path, "bob")
    carol, _ = ssh_keypair(tmp_path, "carol")
    git(repo, "config", "vaultmesh.signingKey", alice.fingerprint)
    vm_ok(repo, "init", "--name", "alice")
    vm_ok(repo, "policy", "add-signer", "bob", "--ssh-key", bob + ".pub")
    vm_ok(repo, "policy", "set-threshold", "release", "2")
    vm_ok(repo, "policy", "set-threshold", "policy", "2")

    vm_ok(repo, "record", "v1.0")
    assert verify_json(repo, "v1.0")[0] == 1
    ok_as(repo, bob, "cosign", "v1.0", fmt="ssh")  # SSH cosign of an OpenPGP-signed release
    rc, rep = verify_json(repo, "v1.0")
    assert rc == 0, failures(rep)

    # a policy change proposed over SSH, signed over OpenPGP, applied over SSH
    add = str(tmp_path / "add-carol.json")
    ok_as(repo, bob, "policy", "add-signer", "carol", "--ssh-key", carol + ".pub", "--propose", add, fmt="ssh")
    vm_ok(repo, "policy", "sign", add)
    ok_as(repo, bob, "policy", "apply", add, fmt="ssh")
    line = json.loads(Path(add).read_text())
    assert sorted(s["format"] for s in line["sigs"]) == ["openpgp", "ssh"]

    # rotation: alice (OpenPGP) out, signed by bob and carol (SSH)
    rm = str(tmp_path / "remove-alice.json")
    ok_as(repo, bob, "policy", "remove-signer", "alice", "--propose", rm, fmt="ssh")
    ok_as(repo, carol, "policy", "sign", rm, fmt="ssh")
    ok_as(repo, carol, "policy", "apply", rm, fmt="ssh")
    shown = json.loads(vm_ok(repo, "policy", "show", "--json"))
    assert [s["name"] for s in shown["signers"]] == ["bob", "carol"]
    assert shown["trust_root"] == alice.fingerprint  # the genesis stays the root of trust

    kb = key(bob, "ssh")
    inject(repo, deploy_body(repo, "alice after removal"), [key(alice.fingerprint)], appender=kb)
    rc, rep = verify_json(repo, "v1.0")
    assert rc == 1 and codes(rep) == {"VM-SIG-UNPINNED"}  # her old release verifies; her new deploy does not
    assert all(alice.fingerprint in c["detail"] for c in failures(rep))
    tag(repo, "v2.0")
    ok_as(repo, bob, "record", "v2.0", fmt="ssh")
    ok_as(repo, carol, "cosign", "v2.0", fmt="ssh")
    rc, rep = verify_json(repo, "v2.0")
    assert rc == 0, failures(rep)
