"""The four ways `check-proof` once failed open where `verify` did not, each rebuilt on a real repository with
real gpg: the situation is made with the CLI where the CLI allows it (and with plumbing + gpg where only an
attacker would write it), the bundle comes from `prove` (edited only where the attack is the edit), and then
`check-proof --json` and `verify --json` must both refuse, with the same code.

A fifth test records what the checkpoint's policy commitment cannot stop: a removed signer whose key signs the
head checkpoint itself (strict xfail, with the reason).

The pristine repository is the tamper matrix's (tests/adversarial/conftest.py): Alice is the genesis signer
and trust root; "bob" is the key called Mallory there, pinned by a policy change in each test.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from git_vaultmesh import ledger, merkle
from git_vaultmesh.entry import canonical, entry_path

from .kit import (
    REF_LOG,
    Ctx,
    Disagreement,
    agree,
    check_proof,
    gpg_export,
    leaf_data,
    parsed_or_none,
    prove,
    run_git,
)
from .test_tamper_matrix import add_bob, check_schema, failed_codes, verify_json, vm_ok
from conftest import kill_agent, make_gpg_home, vm
from policy_kit import as_user, ssh_keypair


def as_bob(ctx: Ctx, *args: str) -> subprocess.CompletedProcess[str]:
    res = vm(ctx.repo, *args, env=dict(ctx.vm_env, **as_user(ctx.mallory.fingerprint)))
    assert "Traceback" not in res.stderr, res.stderr
    return res


def tag_new_commit(repo: Path, env: dict[str, str], name: str) -> None:
    (repo / f"{name}.txt").write_text(f"{name}\n")
    run_git(repo, "add", f"{name}.txt", env=env)
    run_git(repo, "commit", "-q", "-m", name, env=env)
    run_git(repo, "tag", "-a", name, "-m", name, env=env)


def verify_codes(ctx: Ctx, *args: str) -> set[str]:
    code, report = verify_json(ctx, *args)
    assert code == 1 and not report["ok"], report
    return set(failed_codes(report))


def check_codes(ctx: Ctx, bundle: dict[str, Any], name: str = "bundle.json") -> set[str]:
    code, report = check_proof(bundle, ctx.work / name, ctx.alice.fingerprint, ctx.vm_env)
    check_schema(report)
    assert code == 1 and not report["ok"], report
    return set(failed_codes(report))


def bundle_of(ctx: Ctx, tag: str) -> dict[str, Any]:
    bundle, refused = prove(ctx.repo, ctx.vm_env, tag, ctx.work / f"{tag}.prove.json")
    assert bundle is not None, f"prove {tag} refused with {refused}"
    return bundle


def carried_types(bundle: dict[str, Any]) -> list[str]:
    return [json.loads(it["line"])["body"]["type"] for it in bundle["entries"]]


def bob_signs_release_elsewhere(ctx: Ctx, tag: str) -> bytes:
    """The entry blob of a release of `tag` recorded by bob's key with the real CLI, in a copy of the repository
    where he is still pinned: exactly the bytes a removed signer's key (kept, or stolen) can still produce."""
    scratch = ctx.work / "bob" / ctx.repo.name  # same directory name: same `component`
    shutil.copytree(ctx.repo, scratch, symlinks=True)
    res = vm(scratch, "record", tag, env=dict(ctx.vm_env, **as_user(ctx.mallory.fingerprint)))
    assert res.returncode == 0, res.stderr
    size = len(run_git(scratch, "ls-tree", "-r", "--name-only", REF_LOG, "--", "entries", env=ctx.vm_env).split())
    return run_git(scratch, "cat-file", "blob", f"{REF_LOG}:{entry_path(size - 1)}", env=ctx.vm_env)


def revoked_copy(ctx: Ctx) -> str:
    """Bob's public key carrying his revocation, exported from a scratch keyring: his own keyring (where the
    secret key lives) knows nothing of it, so his key still signs."""
    home = make_gpg_home()
    try:
        env = dict(ctx.vm_env, GNUPGHOME=home)
        rev = Path(ctx.world.gnupghome, "openpgp-revocs.d", f"{ctx.mallory.fingerprint}.rev").read_text()
        for data in (gpg_export(ctx.mallory, ctx.vm_env), rev.replace(":-----BEGIN", "-----BEGIN")):
            subprocess.run(["gpg", "--batch", "--import"], input=data.encode(), env=env, check=True,
                           capture_output=True)
        out = subprocess.run(["gpg", "--batch", "--armor", "--export", ctx.mallory.fingerprint], env=env,
                             check=True, capture_output=True, text=True).stdout
        listing = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys", ctx.mallory.fingerprint],
                                 env=env, check=True, capture_output=True, text=True).stdout
        assert any(ln.startswith("pub:r:") for ln in listing.splitlines()), listing  # the copy is revoked
        return out
    finally:
        kill_agent(home)
        shutil.rmtree(home, ignore_errors=True)


def test_revoked_key_signs_release_and_checkpoint(ctx: Ctx) -> None:
    """A later policy entry pins bob's key with its revocation; bob's key then records a release (and signs its
    checkpoint). The bundle from an unedited `prove` carries both pinned copies of the key, the revoked one too."""
    add_bob(ctx)
    ctx.t.commit_policies = True
    current = ctx.t.entries()[-1]["body"]
    assert current["type"] == "policy"
    body = ctx.t.body("policy", message="publish bob's revocation",
                      **{k: v for k, v in current.items() if k not in ("type", "log", "recorded_at", "message")})
    bob = next(s for s in body["signers"] if s["fingerprint"] == ctx.mallory.fingerprint)
    bob["public_key"] = revoked_copy(ctx)
    ctx.t.append([ctx.t.signed(ctx.alice, body)], ctx.alice)  # what Alice publishes, signed and appended by her
    tag_new_commit(ctx.repo, ctx.vm_env, "v2.0")
    res = as_bob(ctx, "record", "v2.0")  # record reads the policy without verifying: bob is still pinned there
    assert res.returncode == 0, res.stderr

    bundle = bundle_of(ctx, "v2.0")
    assert carried_types(bundle).count("policy") == 3
    got, want = check_codes(ctx, bundle), verify_codes(ctx, "v2.0")
    assert want == {"VM-SIG-KEY-REVOKED", "VM-CHECKPOINT-SIG"}, want  # the release, and the checkpoint bob signed
    assert got == want, (got, want)


def test_cosign_by_signer_not_pinned_for_type(ctx: Ctx) -> None:
    """Releases need 2 signers; bob may sign deploys only. Alice records v2.0 (pending), and bob's key appends a
    cosign of it (the CLI refuses to write it): it must not make the release count as signed."""
    vm_ok(ctx, "policy", "add-signer", "bob", "--key", ctx.mallory.fingerprint, "--types", "deploy")
    carol_pub = ssh_keypair(ctx.work, "carol")[0] + ".pub"  # a second release signer, so threshold 2 is valid
    vm_ok(ctx, "policy", "add-signer", "carol", "--ssh-key", carol_pub)
    vm_ok(ctx, "policy", "set-threshold", "release", "2")
    tag_new_commit(ctx.repo, ctx.vm_env, "v2.0")
    vm_ok(ctx, "record", "v2.0")
    refusal = as_bob(ctx, "cosign", "v2.0")
    assert refusal.returncode == 1 and "VM-SIGNER-NOT-IN-POLICY" in refusal.stderr, refusal.stderr
    ctx.t.commit_policies = True
    target = ctx.t.entries()[-1]
    assert target["body"]["type"] == "release"
    digest = hashlib.sha256(canonical(target["body"])).hexdigest()
    cosign = ctx.t.body("cosign", entry=digest, message="cosign by bob")
    ctx.t.append([ctx.t.signed(ctx.mallory, cosign)], ctx.mallory)  # bob is pinned: his checkpoint is fine

    bundle = bundle_of(ctx, "v2.0")
    assert "cosign" in carried_types(bundle)
    got, want = check_codes(ctx, bundle), verify_codes(ctx, "v2.0")
    assert want == {"VM-SIG-PENDING", "VM-SIG-NOT-AUTHORIZED"}, want  # 1 of 2, and the cosign is not counted
    assert got == want, (got, want)


def test_removed_signer_reappends_old_policy_entry(ctx: Ctx) -> None:
    """After `remove-signer bob`, bob's key re-appends, byte for byte, the policy entry that pinned him (the
    rollback verify rejects as a duplicate), then a release it signed, and signs the checkpoint."""
    add_bob(ctx)
    pinned_bob = ctx.t.blobs()[-1]
    tag_new_commit(ctx.repo, ctx.vm_env, "v2.0")
    release = bob_signs_release_elsewhere(ctx, "v2.0")
    vm_ok(ctx, "policy", "remove-signer", "bob")
    ctx.t.commit_policies = True
    ctx.t.append([pinned_bob, release], ctx.mallory)

    bundle = bundle_of(ctx, "v2.0")  # unedited
    assert carried_types(bundle).count("policy") == 4
    got, want = check_codes(ctx, bundle), verify_codes(ctx, "v2.0")
    assert want == {"VM-ENTRY-DUPLICATE", "VM-SIG-UNPINNED", "VM-CHECKPOINT-SIG"}, want
    assert got == want, (got, want)


def test_bundle_omits_policy_entry_that_removed_signer(ctx: Ctx) -> None:
    """After `remove-signer bob`, bob's key appends a release it signed; Alice, unaware, records a deploy on top,
    so the head checkpoint is honest and signed by a pinned signer. A bundle edited to leave out the policy entry
    that removed bob would show bob still pinned: the checkpoint's commitment to the policy entries refuses it.

    verify of the repository fails too, but not with VM-PROOF-INCOMPLETE: it reads every entry, so the removal
    is there and bob's release is VM-SIG-UNPINNED (his checkpoint under Alice's, VM-CHECKPOINT-SIG). The
    unedited bundle is refused with verify's code for the release."""
    add_bob(ctx)
    tag_new_commit(ctx.repo, ctx.vm_env, "v2.0")
    release = bob_signs_release_elsewhere(ctx, "v2.0")
    vm_ok(ctx, "policy", "remove-signer", "bob")
    removal = ctx.t.entries()[-1]
    ctx.t.commit_policies = True
    ctx.t.append([release], ctx.mallory)
    vm_ok(ctx, "record", "v2.0", "--type", "deploy", "--environment", "staging")

    want = verify_codes(ctx, "--all")
    assert want == {"VM-SIG-UNPINNED", "VM-CHECKPOINT-SIG"}, want
    bundle = bundle_of(ctx, "v2.0")
    assert check_codes(ctx, bundle, "unedited.json") == {"VM-SIG-UNPINNED"}

    kept = [it for it in bundle["entries"] if json.loads(it["line"]) != removal]
    assert len(kept) == len(bundle["entries"]) - 1
    assert check_codes(ctx, dict(bundle, entries=kept), "edited.json") == {"VM-PROOF-INCOMPLETE"}


@pytest.mark.xfail(strict=True, raises=Disagreement, reason=(
    "the policy commitment is only as good as the checkpoint's signer: a removed signer's key signs a head "
    "checkpoint (true root) whose policy line leaves out its own removal; the bundle without the removal then "
    "shows that key pinned at the checkpoint's size and check-proof accepts it, while verify of the repository "
    "says VM-CHECKPOINT-MISMATCH, VM-CHECKPOINT-SIG, VM-SIG-UNPINNED. Offline, this is the fork a once-pinned "
    "key can always make; carrying checkpoint.note (a note key the policy pins) or witness cosignatures in the "
    "bundle would close it"))
def test_removed_signer_forges_the_policy_commitment(ctx: Ctx) -> None:
    add_bob(ctx)
    tag_new_commit(ctx.repo, ctx.vm_env, "v2.0")
    release = bob_signs_release_elsewhere(ctx, "v2.0")
    vm_ok(ctx, "policy", "remove-signer", "bob")
    removal = ctx.t.entries()[-1]
    ctx.t.commit_policies = True
    ctx.t.append([release], ctx.mallory)
    blobs = ctx.t.blobs()
    kept = [b for b in blobs if json.loads(b) != removal]
    root = merkle.root_from_leaf_hashes([merkle.leaf_hash(leaf_data(b)) for b in blobs])
    lying = ledger.checkpoint_text(ctx.t.log_id, len(blobs), root,
                                   ledger.policy_commitment([leaf_data(b) for b in kept],
                                                            [parsed_or_none(b) for b in kept]))
    ctx.t.on_top(ctx.t.checkpoint_files(lying, ctx.mallory))  # signed by bob's key

    assert verify_codes(ctx, "--all") == {"VM-CHECKPOINT-MISMATCH", "VM-CHECKPOINT-SIG", "VM-SIG-UNPINNED"}
    bundle = bundle_of(ctx, "v2.0")
    assert check_codes(ctx, bundle, "unedited.json") == {"VM-PROOF-INCOMPLETE"}
    edited = dict(bundle, entries=[it for it in bundle["entries"] if json.loads(it["line"]) != removal])
    code, report = check_proof(edited, ctx.work / "edited.json", ctx.alice.fingerprint, ctx.vm_env)
    check_schema(report)
    agree(code == 1 and not report["ok"], "check-proof accepts the bundle without bob's removal")
