"""The Four Covenants: each is a composition of verification checks, never a rule of its own.

`COVENANTS` is the whole definition: a covenant's name, the checks of the verify report it is made of
(patterns over check names), and what it needs configured. Integrity and Proof-chain are two views of ONE
`verify --all` report, computed once per run; Reproducibility rebuilds the newest recorded release and
compares bytes; Federation has nothing to compose yet and so reports "not configured" (no peers) or fails
(peers configured): it is never a pass without a check behind it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from . import ledger
from .config import Settings
from .entry import Entry
from .errors import VaultMeshError
from .git import Repo
from .verification import Check, Options, Report, verify

PASS, FAIL, NOT_CONFIGURED = "pass", "fail", "not configured"

# checks without which no covenant built on the report can be judged: they are part of every selection
_PREREQUISITES = ("log.present", "log.read")
PROOF_CHAIN_CHECKS = ("log.genesis", "log.trust-root", "policy.*", "entry.*.format", "entry.signatures",
                      "entry.threshold", "entry.tokens", "tokens.*")


@dataclass
class Result:
    """One covenant's verdict in this run, with the checks it was made of."""

    key: str
    number: str
    title: str
    status: str  # pass | fail | not configured
    detail: str
    checks: list[Check] = field(default_factory=list)
    badge_value: str | None = None  # what a badge shows (Integrity: the verified log root)

    @property
    def ok(self) -> bool:
        return self.status != FAIL

    def codes(self) -> list[str]:
        return [c.code for c in self.checks if c.code]

    def as_json(self) -> dict[str, Any]:
        return {"covenant": self.key, "number": self.number, "title": self.title, "status": self.status,
                "ok": self.ok, "detail": self.detail, "codes": sorted(set(self.codes())),
                "checks": [c.as_json() for c in self.checks]}


@dataclass
class Context:
    """What the covenants of one run share: the repository, its settings, and the one verify report."""

    repo: Repo
    settings: Settings
    trust_root: str | None = None
    release: str | None = None  # Reproducibility: this tag instead of the newest recorded release
    _report: Report | None = None

    def report(self) -> Report:
        if self._report is None:
            self._report = verify(self.repo, Options(all=True, trust_root=self.trust_root, remember=True))
        return self._report


@dataclass(frozen=True)
class Covenant:
    key: str
    number: str
    title: str
    checks: tuple[str, ...]  # patterns over the verify report's check names; ("*",) = all of them
    needs: str | None  # the setting it needs configured; None = always judged
    judge: Callable[[Covenant, Context], Result]
    summary: str


def _from_report(cov: Covenant, ctx: Context) -> Result:
    report = ctx.report()
    chosen = [c for c in report.checks
              if any(fnmatchcase(c.check, p) for p in (*cov.checks, *_PREREQUISITES))]
    failed = [c for c in chosen if not c.ok]
    if not chosen:  # nothing to judge by is a failure, never a pass
        first = next((c for c in report.checks if not c.ok), None)
        chosen = [first] if first else [Check(f"{cov.key}.checks", False, "VM-LOG-CORRUPT",
                                                "the verify report holds none of this covenant's checks")]
        failed = chosen
    if failed:
        return Result(cov.key, cov.number, cov.title, FAIL,
                      f"{len(failed)} of {len(chosen)} check(s) failed, first {failed[0].code}: {failed[0].detail}",
                      chosen)
    detail = f"{len(chosen)} check(s) passed ({'pinned trust root' if report.trust == 'pinned' else 'TOFU'})"
    badge = None
    if cov.key == "integrity":
        seen = ledger.load_verified(ctx.repo)  # written by the verify just run (remember=True), for this log
        if seen and seen.get("log") == report.log_id:
            badge = str(seen.get("root"))
            detail += f"; log size {seen.get('size')} root {badge}"
    return Result(cov.key, cov.number, cov.title, PASS, detail, chosen, badge)


def _reproducibility(cov: Covenant, ctx: Context) -> Result:
    command = ctx.settings.get("buildcommand")
    if not command:
        return Result(cov.key, cov.number, cov.title, NOT_CONFIGURED,
                      "no release build declared (vaultmesh.buildCommand / buildCommand in .vaultmesh.toml)")
    checks = rebuild_release(ctx, str(command))
    failed = [c for c in checks if not c.ok]
    if failed:
        return Result(cov.key, cov.number, cov.title, FAIL,
                      f"{len(failed)} check(s) failed, first {failed[0].code}: {failed[0].detail}", checks)
    return Result(cov.key, cov.number, cov.title, PASS, "; ".join(c.detail for c in checks), checks)


def _federation(cov: Covenant, ctx: Context) -> Result:
    """Every peer's current copy is consistent with what we witnessed of it (federation's own rule), and the
    merged view holds no conflict."""
    from . import federation

    peers = federation.peers(ctx.repo)
    if not peers:
        return Result(cov.key, cov.number, cov.title, NOT_CONFIGURED,
                      "no federation peers configured (vaultmesh.peer.<name>.url)")
    checks = [federation.judge_copy(ctx.repo, p) for p in peers]
    merged = federation.merged_view(ctx.repo)
    checks.append(Check("federation.conflicts", not merged.conflicts,
                        "VM-FEDERATION-CONFLICT" if merged.conflicts else None,
                        f"merged view: {merged.size} entries, root {merged.root.hex()}, {len(merged.conflicts)} conflict(s)",
                        "two logs disagree about one release: resolve with their owners" if merged.conflicts else None))
    failed = [c for c in checks if not c.ok]
    if failed:
        return Result(cov.key, cov.number, cov.title, FAIL,
                      f"{len(failed)} check(s) failed, first {failed[0].code}: {failed[0].detail}", checks)
    return Result(cov.key, cov.number, cov.title, PASS, "; ".join(c.detail for c in checks), checks)


COVENANTS: tuple[Covenant, ...] = (
    Covenant("integrity", "I", "Integrity", ("*",), None, _from_report,
             "every entry verifies, the log is append-only with signed checkpoints, every recorded release's "
             "tag, history root and tree digest recompute, the notes agree with the log"),
    Covenant("reproducibility", "II", "Reproducibility", (), "vaultmesh.buildCommand", _reproducibility,
             "the declared release build, run twice in clean checkouts, gives byte-identical artifacts equal "
             "to the recorded digests"),
    Covenant("federation", "III", "Federation", (), "vaultmesh.peer.<name>.url", _federation,
             "every configured peer's witnessed checkpoint is consistent with its current one"),
    Covenant("proof-chain", "IV", "Proof-chain", PROOF_CHAIN_CHECKS, None, _from_report,
             "every entry policy requires to be signed and timestamped is, with valid signatures and tokens"),
)
BY_KEY = {c.key: c for c in COVENANTS}


def judge(ctx: Context, keys: Sequence[str] = ()) -> list[Result]:
    """The named covenants (all four when none is named), in table order."""
    wanted = [c for c in COVENANTS if not keys or c.key in keys]
    results = []
    for cov in wanted:
        try:
            results.append(cov.judge(cov, ctx))
        except VaultMeshError as exc:  # a covenant that could not be computed failed, with its code
            check = Check(f"{cov.key}.run", False, exc.code, exc.cause, exc.hint)
            results.append(Result(cov.key, cov.number, cov.title, FAIL, exc.cause, [check]))
    return results


# --- covenant II: rebuild the release -------------------------------------------------------------------
def _release_to_rebuild(ctx: Context) -> Entry:
    _, entries = ledger.load(ctx.repo)
    releases = [e for e in entries if e.type == "release" and e.subject_ref]
    if ctx.release is not None:
        ref = ctx.repo.full_ref(ctx.release) or f"refs/tags/{ctx.release}"
        releases = [e for e in releases if e.subject_ref == ref]
    if not releases:
        what = ctx.release or "any release"
        raise VaultMeshError("VM-NOT-RECORDED", f"the ledger records no release of {what} to rebuild",
                             "record a release with its artifacts: git vaultmesh record TAG --artifact FILE")
    return releases[-1]


def _artifacts(out: Path) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256, size) of every file the build wrote."""
    found: dict[str, tuple[str, int]] = {}
    if out.is_dir():
        for path in sorted(out.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                found[path.relative_to(out).as_posix()] = (hashlib.sha256(data).hexdigest(), len(data))
    return found


def _build(ctx: Context, command: str, commit: str, epoch: int, where: Path) -> dict[str, tuple[str, int]]:
    output = str(ctx.settings.get("buildoutput") or "dist")
    timeout = ctx.settings.timeout("buildtimeout", 600.0)
    ctx.repo.worktree_add(where, commit)
    try:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("GIT_") or k in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                                                    "GIT_COMMITTER_EMAIL", "GIT_CONFIG_NOSYSTEM")}
        env["SOURCE_DATE_EPOCH"] = str(epoch)
        try:
            res = subprocess.run(["sh", "-c", command], cwd=where, env=env, capture_output=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VaultMeshError("VM-REPRO-BUILD-FAILED", f"the build `{command}` ran longer than {timeout:g} s",
                                 "raise vaultmesh.buildTimeout, or make the build faster") from None
        if res.returncode != 0:
            tail = res.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise VaultMeshError("VM-REPRO-BUILD-FAILED",
                                 f"the build `{command}` exited {res.returncode}: {' / '.join(tail) or 'no output'}",
                                 "run the build by hand in a clean checkout of the tag and fix it")
        found = _artifacts(where / output)
        if not found:
            raise VaultMeshError("VM-REPRO-BUILD-FAILED", f"the build `{command}` wrote nothing under {output}/",
                                 "set vaultmesh.buildOutput to the directory the build writes its artifacts to")
        return found
    finally:
        ctx.repo.worktree_remove(where)
        shutil.rmtree(where, ignore_errors=True)


def rebuild_release(ctx: Context, command: str) -> list[Check]:
    release = _release_to_rebuild(ctx)
    commit = str(release.subject_commit)
    tag = str(release.subject_ref).removeprefix("refs/tags/")
    epoch = ctx.repo.commit_time(commit)
    with tempfile.TemporaryDirectory(prefix="vm-rebuild-") as tmp:
        first = _build(ctx, command, commit, epoch, Path(tmp) / "build-1")
        second = _build(ctx, command, commit, epoch, Path(tmp) / "build-2")
    checks: list[Check] = []
    diffs = []
    for name in sorted(first.keys() | second.keys()):
        a, b = first.get(name), second.get(name)
        if a is None or b is None:
            diffs.append(f"{name}: only in build {'2' if a is None else '1'}")
        elif a != b:
            diffs.append(f"{name}: sha256 {a[0][:16]}… ({a[1]} bytes) vs {b[0][:16]}… ({b[1]} bytes)")
    if diffs:
        checks.append(Check("repro.identical", False, "VM-REPRO-DIFFERS",
                            f"{tag}: two builds at SOURCE_DATE_EPOCH={epoch} differ in {len(diffs)} file(s): "
                            + "; ".join(diffs),
                            "the build embeds something other than the sources (wall-clock time, paths, "
                            "file order); honour SOURCE_DATE_EPOCH"))
    else:
        checks.append(Check("repro.identical", True, None,
                            f"{tag}: two builds at SOURCE_DATE_EPOCH={epoch} are byte-identical "
                            f"({len(first)} file(s))"))
    recorded = release.body.get("artifacts") or []
    if not recorded:
        checks.append(Check("repro.recorded", False, "VM-REPRO-NO-DIGESTS",
                            f"{tag}: the release records no artifact digests to compare the rebuild with",
                            "record releases with their artifacts: git vaultmesh record TAG --artifact FILE"))
        return checks
    by_name: dict[str, list[tuple[str, str]]] = {}
    for rel, (digest, _) in first.items():
        by_name.setdefault(rel.rsplit("/", 1)[-1], []).append((rel, digest))
    bad = []
    for art in recorded:
        built = by_name.get(str(art.get("name")), [])
        if not built:
            bad.append(f"{art.get('name')}: recorded, not built")
        elif all(d != art.get("sha256") for _, d in built):
            bad.append(f"{art.get('name')}: rebuilt sha256 {built[0][1][:16]}…, recorded "
                       f"{str(art.get('sha256'))[:16]}…")
    if bad:
        checks.append(Check("repro.recorded", False, "VM-REPRO-MISMATCH", f"{tag}: " + "; ".join(bad),
                            "the released artifacts were not built from the tagged sources by this build"))
    else:
        checks.append(Check("repro.recorded", True, None,
                            f"{tag}: {len(recorded)} recorded artifact(s) rebuilt with the recorded sha256"))
    return checks


# --- badge -------------------------------------------------------------------------------------------------
def badge_svg(result: Result) -> str:
    """A flat shields-style badge; only ever made from a Result that passed in this run."""
    if result.status != PASS:
        raise VaultMeshError("VM-BADGE-REFUSED", f"covenant {result.title} is {result.status} in this run",
                             "a badge is written only from a passing check: fix what failed and run again")
    label = f"vaultmesh {result.title.lower()}"
    value = "passing" + (f" · root {result.badge_value[:12]}" if result.badge_value else "")
    lw, vw = 7 * len(label) + 12, 7 * len(value) + 12
    width = lw + vw
    esc = value.replace("&", "&amp;").replace("<", "&lt;")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
            f'aria-label="{label}: {esc}">\n'
            f"  <title>{label}: {esc}"
            + (f" (log root {result.badge_value})" if result.badge_value else "") + "</title>\n"
            f'  <rect width="{lw}" height="20" fill="#555"/>\n'
            f'  <rect x="{lw}" width="{vw}" height="20" fill="#4c1"/>\n'
            f'  <g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">\n'
            f'    <text x="6" y="14">{label}</text>\n'
            f'    <text x="{lw + 6}" y="14">{esc}</text>\n'
            "  </g>\n</svg>\n")

