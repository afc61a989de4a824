"""Differential: `check-proof` reaches `verify`'s verdict on every tamper-matrix row a proof bundle can express.

Each row's attack runs on a fresh copy of the pristine repository (checkpoints written with their `policy`
line, as the current version writes them), then:
- `verify --json` with the row's arguments gives the reference codes V;
- `prove TAG --in TAG` (TAG: the row's tag, else v1.1) either refuses, and then with a code among V, or gives a
  bundle;
- the *whole-log bundle*: that bundle (or, where prove refused, the pristine repository's bundle of TAG) carrying
  the tampered log as an attacker would hand it over: the head checkpoint and its signature, and every entry
  line with its inclusion proof. check-proof judges all the entries a bundle carries, so this is the bundle that
  sees everything `verify --all` sees of the entries. It must be refused with the row's expected code(s), and
  with no code verify does not report (COUNTERPART names the two a bundle spells its own way).

Rows whose refusal needs what only a repository has are listed in REPO_ONLY with why (skipped); rows whose log
cannot even be read into a bundle are in PROVE_REFUSES: there prove's refusal must be one of verify's codes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from git_vaultmesh import merkle
from git_vaultmesh.entry import seq_of_path

from .kit import REF_LOG, Ctx, Disagreement, Row, World, agree, check_proof, leaf_data, prove
from .test_tamper_matrix import ROWS, check_schema, failed_codes, verify_json

# verify's code -> the bundle's name for the same defect
COUNTERPART = {
    # verify compares the checkpoint with the log commit's entries; a bundle, each entry with its inclusion proof
    "VM-CHECKPOINT-MISMATCH": "VM-PROOF-INVALID",
    # the checkpoint is part of the bundle: a bundle whose checkpoint does not parse is malformed
    "VM-CHECKPOINT-MALFORMED": "VM-PROOF-MALFORMED",
}

REPO_ONLY: dict[str, tuple[str, ...]] = {
    "judged against the checkpoint this clone verified last; a bundle is judged by the trust root alone":
        ("rollback", "fork-shorter", "fork-same-size", "replace-log-tofu-remembered", "replace-log-same-key"),
    "the log that replaces ours holds no release, so there is nothing to prove (prove: VM-NOT-RECORDED); "
    "genesis-swapped is the same trust-root attack on a log with releases":
        ("replace-log-other-key", "replace-log-flag-pin", "toml-trust-root"),
    "the log's git commits and tree are odd (an extra file, a merge, a missing old commit) while every entry "
    "line and the head checkpoint are intact: a bundle carries only those":
        ("extra-file", "merge-commit", "log-commit-missing"),
    "tags, the commit graph, trees, objects and artifacts in the repository: a bundle carries one commit's "
    "bytes and its inclusion in the signed history root":
        ("tag-moved", "tag-retagged-same-commit", "tag-deleted", "history-rewritten-retag",
         "history-rewritten-pruned", "replace-blob", "replace-graft", "replace-tag-object", "graft-file",
         "artifact-changed", "artifact-not-recorded", "artifact-shadowed", "artifact-mix-and-match",
         "deploy-subject-missing", "released-blob-missing"),
    "refs/notes/vaultmesh is derived from the log; a bundle carries no notes":
        ("notes-swapped", "notes-deleted", "notes-ref-to-blob", "notes-shadow-fanout", "notes-extra"),
}

# the log cannot be read into a bundle (its tree, numbering, checkpoint files or objects are broken, or there is
# no log or no receipt): prove refuses, and must say what verify says
PROVE_REFUSES = ("body-byte-on-top", "remove-entry-gap", "remove-last-on-top", "reorder-on-top", "seq-skip",
                 "stray-entry-name", "entry-as-gitlink", "entry-wrong-fanout", "entry-symlink", "log-ref-to-blob",
                 "checkpoint-sig-removed", "checkpoint-removed", "loose-entry-truncated", "loose-entry-deleted",
                 "pack-corrupted", "not-initialized", "unrecorded-tag", "unknown-rev")

DISAGREE: dict[str, str] = {}

SKIPPED = {row: why for why, rows in REPO_ONLY.items() for row in rows}
BY_ID = {r.id: r for r in ROWS}


def _param(row: Row) -> Any:
    if row.id in SKIPPED:
        return pytest.param(row, id=row.id, marks=[pytest.mark.skip(reason=f"repository only: {SKIPPED[row.id]}")])
    if row.id not in DISAGREE:
        return pytest.param(row, id=row.id)
    return pytest.param(row, id=row.id, marks=[pytest.mark.xfail(strict=True, raises=Disagreement,
                                                                 reason=DISAGREE[row.id])])


def target_tag(args: list[str]) -> str:
    return args[0] if args and args[0].startswith("v") else "v1.1"


def allowed(verify_codes: set[str]) -> set[str]:
    """The codes check-proof may report for a log verify refuses with these codes."""
    out = verify_codes | {COUNTERPART[c] for c in verify_codes if c in COUNTERPART}
    if "VM-PROOF-INVALID" in out:  # an entry not included is not carried: the policy commitment cannot match
        out.add("VM-PROOF-INCOMPLETE")
    return out


def whole_log(ctx: Ctx, base: dict[str, Any]) -> dict[str, Any]:
    """`base` carrying the tampered log: the head checkpoint, and every entry line with its inclusion proof."""
    paths = ctx.t.git("ls-tree", "-r", "--name-only", REF_LOG, "--", "entries").split()
    lines = [leaf_data(ctx.t.gitb("cat-file", "blob", f"{REF_LOG}:{p}"))
             for p in sorted(p for p in paths if seq_of_path(p) is not None)]
    leaves = [merkle.leaf_hash(line) for line in lines]
    bundle: dict[str, Any] = json.loads(json.dumps(base))
    bundle["checkpoint"] = {name: ctx.t.gitb("cat-file", "blob", f"{REF_LOG}:{f}").decode("utf-8", "surrogateescape")
                            for name, f in (("text", "checkpoint"), ("sig", "checkpoint.sig"))}
    bundle["entries"] = [{"index": i, "line": line.decode("utf-8", "surrogateescape"),
                          "inclusion": [h.hex() for h in merkle.inclusion_proof(leaves, i)]}
                         for i, line in enumerate(lines)]
    return bundle


def check(ctx: Ctx, bundle: dict[str, Any], name: str) -> set[str]:
    code, report = check_proof(bundle, ctx.work / name, ctx.alice.fingerprint, ctx.vm_env)
    check_schema(report)
    assert (code == 0) == report["ok"], (code, report)
    return set(failed_codes(report))


@pytest.fixture(scope="module")
def pristine(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The untampered repository's bundles (v1.0, v1.1) and entry lines; both bundles pass check-proof."""
    out: dict[str, Any] = {}
    where = tmp_path_factory.mktemp("pristine-bundles")
    for tag in ("v1.0", "v1.1"):
        bundle, refused = prove(world.repo, world.env, tag, where / f"{tag}.json")
        assert bundle is not None, refused
        code, report = check_proof(bundle, where / f"{tag}.check.json", world.alice.fingerprint, world.env)
        assert code == 0 and report["ok"], report
        out[tag] = bundle
    out["lines"] = {it["line"] for tag in ("v1.0", "v1.1") for it in out[tag]["entries"]}
    return out


def test_lists_name_matrix_rows() -> None:
    """Every row is compared, refused-compared or skipped for a stated reason; no list names a row twice."""
    named = [*SKIPPED, *PROVE_REFUSES]
    assert len(named) == len(set(named)) and set(named) <= set(BY_ID), set(named) - set(BY_ID)
    assert set(DISAGREE) <= set(BY_ID)
    compared = [r for r in ROWS if r.id not in named]
    assert len(compared) >= 45 and len(compared) > len(SKIPPED), (len(compared), len(SKIPPED))


def test_whole_log_bundle_of_pristine_passes(ctx: Ctx, pristine: dict[str, Any]) -> None:
    """The control: the whole-log bundle of the untampered copy (deploy included) passes, so a refusal below is
    the tamper's."""
    for tag in ("v1.0", "v1.1"):
        assert check(ctx, whole_log(ctx, pristine[tag]), f"{tag}.json") == set()


@pytest.mark.parametrize("row", [_param(r) for r in ROWS])
def test_same_verdict(row: Row, ctx: Ctx, pristine: dict[str, Any]) -> None:
    ctx.t.commit_policies = True
    row.attack(ctx)
    args = [a.format(art=ctx.art, alice=ctx.alice.fingerprint) for a in row.args]
    code, report = verify_json(ctx, *args)
    want = set(failed_codes(report))
    assert code == 1 and want, f"verify accepted the tamper: {report}"
    tag = target_tag(args)
    bundle, refused = prove(ctx.repo, ctx.vm_env, tag, ctx.work / "prove.json")
    if refused is not None:
        agree(refused in want, f"prove refused with {refused}, verify with {sorted(want)}")
    if row.id in PROVE_REFUSES:
        agree(refused is not None, f"prove made a bundle of a log verify refuses with {sorted(want)}")
        return
    if bundle is not None and not {it["line"] for it in bundle["entries"]} <= pristine["lines"]:
        # prove's own bundle carries a line the attack wrote: whatever it says, verify must say it too
        got = check(ctx, bundle, "unedited.json")
        agree(got <= allowed(want), f"unedited bundle: check-proof {sorted(got)}, verify {sorted(want)}")
    got = check(ctx, whole_log(ctx, bundle or pristine[tag]), "whole-log.json")
    agree(bool(got), f"check-proof accepted what verify refuses with {sorted(want)}")
    for alternatives in row.expect:
        spelled = set(alternatives.split("|"))
        spelled |= {COUNTERPART[c] for c in spelled if c in COUNTERPART}
        agree(bool(spelled & got & allowed(want)),
              f"want {alternatives}: check-proof {sorted(got)}, verify {sorted(want)}")
    agree(got <= allowed(want), f"check-proof {sorted(got)} reports what verify ({sorted(want)}) does not")


def test_prove_bundles_the_release_it_is_asked_for(ctx: Ctx) -> None:
    ctx.t.commit_policies = True
    BY_ID["threshold-single-key"].attack(ctx)  # v2.0 on v1.1's commit, its release signed by one of two
    code, report = verify_json(ctx, "v2.0")
    assert code == 1 and set(failed_codes(report)) == {"VM-SIG-PENDING"}, report
    bundle, refused = prove(ctx.repo, ctx.vm_env, "v2.0", ctx.work / "v2.0.json")
    if bundle is None:
        agree(refused == "VM-SIG-PENDING", f"prove v2.0 refused with {refused}")
        return
    release = next(it for it in bundle["entries"] if it["index"] == bundle["release"])
    ref = json.loads(release["line"])["body"]["subject"]["ref"]
    agree(ref == "refs/tags/v2.0", f"prove v2.0 bundled the release of {ref}")
    agree(bool(check(ctx, bundle, "v2.0.check.json")), "check-proof accepts the bundle prove made for v2.0")
