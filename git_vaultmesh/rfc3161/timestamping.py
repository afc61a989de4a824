"""RFC 3161 timestamps inside the ledger (docs/formats.md, docs/timestamps.md): which tokens count for which entry, archive
timestamps (long-term validation), and fetching tokens from the policy's TSAs in bounded batches.

One module for the writers (`record`, `tsa add`, `timestamp`) and the judges (`verify`, `doctor`), so that
what is appended is exactly what verification accepts:

* an entry timestamp is a `timestamp` entry naming an entry id; each token's imprint is SHA-256 of that
  entry's line (body and signatures);
* an archive timestamp names `"checkpoint": "<size>"`; each token's imprint is SHA-256 of the C2SP checkpoint
  body `vaultmesh/<log_id>\\n<size>\\n<base64 root of the first size entries>\\n`;
* a token is judged against the policy in force at the position of the `timestamp` entry that carries it
  (the TSA must be named there; CA and pin come from there); an entry's requirement comes from the policy in
  force at the entry's own position;
* a token whose signer certificate has expired by "now" counts only if an archive timestamp whose checkpoint
  includes the `timestamp` entry carrying it has a valid (itself anchored) token made before that notAfter.

Nothing here talks to git except `endpoints` (git config for TSA URLs); nothing here appends.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .. import merkle
from ..entry import NO_TOKEN_TYPES, Entry, now_rfc3339, sha256_hex, sign_body
from ..errors import VaultMeshError
from ..ledger import checkpoint_text
from ..policy import Policy, may_sign
from .fetch import Endpoint, Fetched, fetch, verify_fetched

if TYPE_CHECKING:
    from ..config import Settings
    from ..git import Repo
    from ..signing import SigningKey
    from .tsa import TokenInfo

DEFAULT_TIMEOUT = 10.0  # seconds per TSA request (vaultmesh.tsaTimeout)
DEFAULT_JOBS = 16  # concurrent TSA requests (vaultmesh.tsaJobs)

SIGN_JOBS = 4  # concurrent gpg/ssh-keygen processes when signing many timestamp entries

# How far an entry's recorded_at may lie after its token's genTime: clocks of the recorder and the TSA disagree
# a little. Beyond it the entry claims a time at which, by the token, it already existed: impossible.
CLOCK_ALLOWANCE = timedelta(minutes=10)
HINT_PENDING = "run `git vaultmesh timestamp --pending` once the TSA is reachable"
HINT_UNKNOWN = ("tokens count only from TSAs named in the policy in force where they were appended; "
                "add the TSA with `git vaultmesh tsa add` (a signed policy change)")
HINT_OTHER_ENTRY = ("a token proves the time of the exact line it was issued for: request one for this entry "
                    "(`git vaultmesh timestamp --pending`)")
HINT_EXPIRED = ("renew tokens with `git vaultmesh timestamp --archive` before TSA certificates expire; this token "
                "can no longer be renewed, so request a fresh token for the entry if it must count")


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str) -> datetime:
    """The inverse of `iso`: RFC 3339 UTC seconds (ValueError for anything else)."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


# --- timestamp entries ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stamp:
    """A parsed `timestamp` entry (its shape was checked by entry.check_body)."""

    seq: int
    entry: str | None  # the timestamped entry's id, or None for an archive timestamp
    checkpoint: int | None  # archive timestamp: the checkpoint size
    tokens: tuple[tuple[str, str], ...]  # (TSA name, base64 DER TimeStampResp)


def parse_stamp(seq: int, e: Entry) -> Stamp:
    cp = e.body.get("checkpoint")
    tokens = tuple((str(t["tsa"]), str(t["tsr"])) for t in e.body.get("tokens", []))
    return Stamp(seq, e.body.get("entry"), int(cp) if isinstance(cp, str) else None, tokens)


def archive_data(log_id: str, size: int, leaf_hashes: Sequence[bytes]) -> bytes:
    """What an archive token's imprint covers: the checkpoint body of the log's first `size` entries."""
    return checkpoint_text(log_id, size, merkle.root_from_leaf_hashes(leaf_hashes[:size]))


def timestamp_body(log_id: str, tokens: Sequence[tuple[str, bytes]], *, entry: str | None = None,
                   checkpoint: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "timestamp", "log": log_id, "recorded_at": now_rfc3339()}
    if entry is not None:
        body["entry"] = entry
    else:
        body["checkpoint"] = str(checkpoint)
    body["tokens"] = [{"tsa": name, "tsr": base64.b64encode(tsr).decode("ascii")}
                      for name, tsr in sorted(tokens, key=lambda t: t[0])]
    return body


def sign_bodies(key: SigningKey, bodies: Sequence[dict[str, Any]], jobs: int = SIGN_JOBS) -> list[Entry]:
    """Entries for bodies signed by key; several gpg/ssh-keygen processes at once for large batches."""
    if len(bodies) <= 1:
        return [sign_body(b, key) for b in bodies]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(bodies)))) as pool:
        return list(pool.map(lambda b: sign_body(b, key), bodies))


# --- judging tokens ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """One token of one `timestamp` entry, judged. `code` is None exactly when the token counts."""

    seq: int  # the timestamp entry carrying the token
    index: int
    tsa: str
    target: int | None  # the timestamped entry (None for an archive token)
    checkpoint: int | None  # archive tokens: the checkpoint size
    code: str | None
    detail: str
    hint: str | None = None
    info: TokenInfo | None = None  # set whenever the token itself verified (also when expired-unanchored)

    @property
    def ok(self) -> bool:
        return self.code is None


@dataclass(frozen=True)
class Pending:
    seq: int
    need: int
    have: tuple[str, ...]  # TSAs with a valid token
    missing: tuple[str, ...]  # TSAs of the entry's policy without one
    same_authority: tuple[str, ...] = ()  # valid tokens not counted: their key already counted for another TSA


class TokenBook:
    """Every `timestamp` entry of a log, indexed, with tokens judged lazily (verify REV judges few)."""

    def __init__(self, lines: Sequence[bytes], entries: Sequence[Entry | None],
                 policies: Sequence[Policy | None], log_id: str, *, now: datetime,
                 usable: Callable[[int], bool] | None = None) -> None:
        self.lines = lines
        self.entries = entries
        self.policies = policies
        self.log_id = log_id
        self.now = now
        self._usable = usable or (lambda _seq: True)
        self.ids: dict[str, int] = {}
        for i, line in enumerate(lines):
            self.ids.setdefault(sha256_hex(line), i)
        self.stamps: dict[int, Stamp] = {}
        self.of_target: dict[int, list[int]] = {}
        self.archives: list[int] = []
        self.problems: dict[int, tuple[str, str]] = {}  # timestamp entry -> (code, detail): bad reference
        self._verdicts: dict[int, list[Verdict]] = {}
        self._archives_ready = False
        self._leaves: list[bytes] | None = None
        for seq, e in enumerate(entries):
            if e is None or e.type != "timestamp":
                continue
            st = parse_stamp(seq, e)
            self.stamps[seq] = st
            if st.entry is not None:
                target = self.ids.get(st.entry)
                if target is None or target >= seq:
                    self.problems[seq] = ("VM-ENTRY-REF-INVALID", f"timestamp entry #{seq} names entry "
                                          f"{st.entry[:12]}…, which is {'a later' if target is not None else 'no'} entry of "
                                          "this log; a timestamp follows the entry it timestamps")
                    continue
                self.of_target.setdefault(target, []).append(seq)
            elif st.checkpoint is not None:
                if not 1 <= st.checkpoint <= seq:
                    self.problems[seq] = ("VM-ENTRY-REF-INVALID", f"archive timestamp entry #{seq} names checkpoint "
                                          f"size {st.checkpoint}; a size from 1 to {seq} (the entries before it) "
                                          "was required")
                    continue
                self.archives.append(seq)

    # --- the verdicts ---------------------------------------------------------------------------------
    def verdicts(self, seq: int) -> list[Verdict]:
        """The judged tokens of timestamp entry `seq` (empty if it names nothing valid)."""
        done = self._verdicts.get(seq)
        if done is not None:
            return done
        st = self.stamps.get(seq)
        out: list[Verdict] = []
        if st is not None and seq not in self.problems:
            if st.entry is not None:
                target: int | None = self.ids[st.entry]
                data = self.lines[self.ids[st.entry]]
                what = f"entry #{target}"
            else:
                target = None
                assert st.checkpoint is not None
                data = archive_data(self.log_id, st.checkpoint, self._leaf_hashes())
                what = f"checkpoint {st.checkpoint}"
            for i, (name, b64) in enumerate(st.tokens):
                where = f"timestamp entry #{seq} token {i + 1} (TSA {name}) on {what}"
                out.append(self._judge(st, i, name, b64, data, target, where))
        self._verdicts[seq] = out
        return out

    def _leaf_hashes(self) -> list[bytes]:
        if self._leaves is None:
            self._leaves = [merkle.leaf_hash(line) for line in self.lines]
        return self._leaves

    def _judge(self, st: Stamp, i: int, name: str, b64: str, data: bytes, target: int | None,
               where: str) -> Verdict:
        from .tsa import TsaTrust, verify_token

        def bad(code: str, detail: str, hint: str | None = None, info: TokenInfo | None = None) -> Verdict:
            return Verdict(st.seq, i, name, target, st.checkpoint, code, f"{where}: {detail}", hint, info)

        policy = self.policies[st.seq] if st.seq < len(self.policies) else None
        ptsa = policy.tsa(name) if policy is not None else None
        if policy is None or ptsa is None:
            listed = ", ".join(t.name for t in policy.tsas) if policy is not None else ""
            return bad("VM-TSA-UNKNOWN", f"TSA {name!r} is not in the policy in force at #{st.seq} "
                       f"(its TSAs: {listed or 'none'}); a token counts only from a policy TSA", HINT_UNKNOWN)
        try:
            tsr = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            return bad("VM-TSA-NOT-DER", "the token is not base64 text, so not a DER TimeStampResp either",
                       "the entry was not written by git-vaultmesh; request a new token")
        trust = TsaTrust(ptsa.name, ptsa.ca_cert, ptsa.spki_pin)
        try:
            info = verify_token(tsr, data, trust)
        except VaultMeshError as exc:
            if exc.code == "VM-TSA-IMPRINT" and target is not None:
                other = self._imprint_owner(tsr)
                if other is not None and other != target:
                    return bad("VM-TSA-OTHER-ENTRY", f"the token's imprint is SHA-256 of entry #{other}'s line, "
                               f"not of entry #{target}'s: it was issued for another entry", HINT_OTHER_ENTRY)
            return bad(exc.code, exc.cause, exc.hint)
        if info.signer_not_after < self.now and not self._anchored(st.seq, info):
            return bad("VM-TSA-EXPIRED-UNANCHORED",
                       f"genTime {iso(info.gen_time)} was within the signer certificate {info.signer_subject!r}, "
                       f"but that certificate expired at {iso(info.signer_not_after)}, before the verification "
                       f"time {iso(self.now)}; no archive timestamp whose checkpoint includes entry #{st.seq} "
                       f"was made (with a valid token) before {iso(info.signer_not_after)}", HINT_EXPIRED, info)
        claimed = _recorded_at(self.entries[target]) if target is not None else None
        if claimed is not None and claimed - info.gen_time > CLOCK_ALLOWANCE:
            return bad("VM-TSA-BEFORE-ENTRY",
                       f"entry #{target} says it was recorded at {iso(claimed)}, but the token proves it existed "
                       f"at genTime {iso(info.gen_time)}, {claimed - info.gen_time} earlier (the clock allowance is "
                       f"{CLOCK_ALLOWANCE})", None, info)
        return Verdict(st.seq, i, name, target, st.checkpoint, None,
                       f"{where}: genTime {iso(info.gen_time)}", None, info)

    def _imprint_owner(self, tsr: bytes) -> int | None:
        from .tsa import OID_SHA256, parse_response

        try:
            parsed = parse_response(tsr)
        except VaultMeshError:
            return None
        if parsed.imprint_alg_oid != OID_SHA256:
            return None
        return self.ids.get(parsed.imprint.hex())

    def _anchored(self, seq: int, info: TokenInfo) -> bool:
        """Is a token carried by entry `seq` renewed by an archive timestamp made while its certificate held?"""
        if not self._archives_ready:
            self._archives_ready = True
            for a in reversed(self.archives):  # later archives first: each judges only archives after it
                if self._usable(a):
                    self.verdicts(a)
        for a in self.archives:
            st = self.stamps[a]
            if a <= seq or st.checkpoint is None or st.checkpoint < seq + 1 or not self._usable(a):
                continue
            for v in self.verdicts(a):
                if v.ok and v.info is not None and v.info.gen_time < info.signer_not_after:
                    return True
        return False

    # --- per entry -------------------------------------------------------------------------------------
    def required(self, seq: int) -> int:
        e = self.entries[seq]
        policy = self.policies[seq] if seq < len(self.policies) else None
        if e is None or policy is None or e.type in NO_TOKEN_TYPES:
            return 0
        return policy.tokens(e.type)

    def valid(self, seq: int) -> dict[str, Verdict]:
        """TSA name -> a valid token on entry `seq`, one per distinct authority: what a k-of-n requirement
        counts. Policy TSAs whose tokens are signed by one key (the same signer SPKI) are one authority, so a
        second token from that key counts for nothing, whatever TSA name it is filed under."""
        return self._counted(seq)[0]

    def _counted(self, seq: int) -> tuple[dict[str, Verdict], dict[str, str]]:
        out: dict[str, Verdict] = {}
        same: dict[str, str] = {}  # TSA name -> the counted TSA whose signing key it shares
        by_key: dict[str, str] = {}
        for ts in self.of_target.get(seq, []):
            if not self._usable(ts):
                continue
            for v in self.verdicts(ts):
                if not v.ok or v.tsa in out or v.info is None:
                    continue
                first = by_key.get(v.info.spki_pin)
                if first is not None and first != v.tsa:
                    same.setdefault(v.tsa, first)
                    continue
                by_key[v.info.spki_pin] = v.tsa
                out[v.tsa] = v
        return out, same

    def pending(self, seq: int) -> Pending | None:
        need = self.required(seq)
        if need == 0:
            return None
        have, same = self._counted(seq)
        if len(have) >= need:
            return None
        policy = self.policies[seq]
        assert policy is not None
        return Pending(seq, need, tuple(sorted(have)), tuple(t.name for t in policy.tsas if t.name not in have),
                       tuple(f"{a} (same signing key as {b})" for a, b in sorted(same.items())))


def _recorded_at(entry: Entry | None) -> datetime | None:
    raw = entry.body.get("recorded_at") if entry is not None else None
    if not isinstance(raw, str):
        return None
    try:
        return from_iso(raw)
    except ValueError:
        return None  # the entry's shape is the statement rules' to judge


def verification_now() -> datetime:
    """The time tokens are judged at: now, or VAULTMESH_NOW (RFC 3339 UTC) — a knob for tests and audits
    ("would this ledger still verify on that date?"), read only by verification."""
    import os

    raw = os.environ.get("VAULTMESH_NOW")
    if not raw:
        return datetime.now(timezone.utc)
    try:
        return from_iso(raw)
    except ValueError:
        raise VaultMeshError("VM-CONFIG-INVALID", f"VAULTMESH_NOW={raw!r} is not RFC 3339 UTC seconds",
                             "use the form 2030-01-31T12:00:00Z, or unset VAULTMESH_NOW") from None


# --- fetching tokens --------------------------------------------------------------------------------------

_warm: tuple[threading.Thread, int, list[Settings]] | None = None  # (thread, id(repo), [settings read])


def warm_up(repo: Repo) -> None:
    """Call first thing in a command that may timestamp. In a background thread: read the vaultmesh.* config
    (one git process for every key) and, if any TSA URL is configured, import the light RFC 3161 client (tsa.py
    with der.py, rfc3161/client.py with socket: ~6 ms; cryptography is not imported here but by the thread that
    verifies the token, see stamp_entries), so that both overlap the git and gpg work the command does before
    it needs a token. Importing cryptography here too was measured slower: it then competes for the
    interpreter lock with the command's own git calls.

    Measured against a helper process doing the imports on another core: the thread won on a loaded 2-core
    machine (no second interpreter to start) and costs a command without TSAs only the thread itself."""
    global _warm
    if _warm is not None:
        return
    box: list[Settings] = []

    def load() -> None:
        from ..config import Settings

        try:
            settings = Settings(repo)
            settings.git_keys()  # one git process reads every vaultmesh.* key
        except VaultMeshError:
            return
        box.append(settings)
        if any(k.startswith("vaultmesh.tsa.") and k.endswith(".url") for k in settings.git_keys()):
            try:
                from . import client, tsa  # noqa: F401
            except ImportError:  # pragma: no cover - the real import in the caller reports it
                pass

    thread = threading.Thread(target=load, name="vaultmesh-tsa-warm-up", daemon=True)
    _warm = (thread, id(repo), box)
    thread.start()


def _take_warm(repo: Repo) -> Settings | None:
    """The settings warm_up read for this repository (once), after its imports finished; else None."""
    global _warm
    warm, _warm = _warm, None
    if warm is None:
        return None
    warm[0].join()
    return warm[2][0] if warm[1] == id(repo) and warm[2] else None


def endpoints(repo: Repo, policy: Policy, settings: Settings | None = None) -> tuple[list[Endpoint], list[str]]:
    """(TSAs of the policy with a URL in git config, names of those without one)."""
    from ..config import Settings

    settings = settings or Settings(repo)
    found: list[Endpoint] = []
    missing: list[str] = []
    for t in policy.tsas:
        url = settings.tsa_url(t.name)
        if url:
            found.append(Endpoint(t.name, url, t.ca_cert, t.spki_pin))
        else:
            missing.append(t.name)
    return found, missing


@dataclass
class StampOutcome:
    """What stamping some new entries produced: timestamp entries to append right after them, and why
    any TSA gave no token."""

    entries: list[Entry] = field(default_factory=list)
    tsas: dict[str, list[str]] = field(default_factory=dict)  # stamped entry id -> TSAs that gave a token
    problems: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # entry ids left with fewer tokens than required
    _verdict: Callable[[], bool] | None = field(default=None, repr=False)

    def confirm(self) -> bool:
        """Wait for the tokens in `entries` to be verified. True: all of them verified. False: some did not,
        and `entries` (and the rest) were rebuilt from those that did; append those instead. Pass it to
        ledger.append as `confirm`: it is asked just before the refs move, so the check overlaps the build."""
        verdict, self._verdict = self._verdict, None
        return True if verdict is None else verdict()

    def as_json(self, entry_id: str) -> dict[str, Any]:
        return {"tsas": self.tsas.get(entry_id, []), "pending": entry_id in self.pending,
                "problems": list(self.problems)}

    def warn(self, entry_id: str) -> None:
        """Warnings on stderr: why a TSA gave no token, and that the entry is pending (never an error)."""
        from ..ui import warn

        for p in self.problems:
            warn(p)
        if entry_id in self.pending:
            warn(f"entry {entry_id[:12]} was recorded but is pending a timestamp (VM-TSA-PENDING): "
                 f"{HINT_PENDING}")


def settings_for(repo: Repo, settings: Settings | None = None) -> tuple[float, int]:
    """(seconds per TSA request, requests in flight) from vaultmesh.tsaTimeout and vaultmesh.tsaJobs."""
    from ..config import Settings

    s = settings or Settings(repo)
    jobs = s.get("tsajobs")
    if jobs is not None and not 1 <= int(jobs) <= 256:
        raise VaultMeshError("VM-CONFIG-INVALID", f"vaultmesh.tsaJobs = {jobs} is out of range",
                             "use a number of concurrent requests from 1 to 256")
    return s.timeout("tsatimeout", DEFAULT_TIMEOUT), int(jobs) if jobs is not None else DEFAULT_JOBS


def stamp_entries(repo: Repo, key: SigningKey, policy: Policy, targets: Sequence[Entry]) -> StampOutcome:
    """Tokens from every TSA of `policy` (the policy the targets will be judged by) over each target's line,
    as one signed `timestamp` entry per target, to append in the same append as the targets, with the
    outcome's `confirm` passed to ledger.append (the tokens are still being verified when this returns).

    Never raises because of a TSA: an unreachable, slow or misbehaving TSA leaves the entry pending (listed in
    `problems` and `pending`) so the caller still appends what it set out to record."""
    out = StampOutcome()
    if not policy.tsas or not targets:
        return out
    from ..config import Settings

    log_id = str(targets[0].body["log"])
    settings = _take_warm(repo) or Settings(repo)
    timeout, jobs = settings_for(repo, settings)
    eps, no_url = endpoints(repo, policy, settings)
    for name in no_url:
        out.problems.append(f"TSA {name}: no URL configured (git config vaultmesh.tsa.{name}.url URL)")
    try:
        may_sign(policy, key, "timestamp", lambda _: (f"your key {key.fingerprint} may not sign timestamp entries "
                                                      "under the policy", ""))
    except VaultMeshError as exc:  # the targets are still appended, pending: never raise because of a TSA
        out.problems.append(exc.cause)
        eps = []
    # Fetched now, verified in a thread while the caller signs and builds the append (confirm() waits for
    # it before the refs move): the verifier's imports (cryptography, ~25 ms) and checks are off the path.
    work = [(t.line, ep) for t in targets for ep in eps]
    fetched = fetch(work, timeout=timeout, workers=jobs, verify=False)
    base_problems = list(out.problems)
    _tally(out, key, policy, log_id, targets, fetched, len(eps), base_problems)
    if not any(f.tsr is not None for f in fetched):
        return out
    box: list[list[Fetched]] = []
    thread = threading.Thread(target=lambda: box.append(verify_fetched(work, fetched)), daemon=True,
                              name="vaultmesh-tsa-verify")
    thread.start()

    def verdict() -> bool:
        thread.join()
        checked = box[0] if box else verify_fetched(work, fetched)  # a crashed thread: raise here, in the open
        if all((c.tsr is None) == (f.tsr is None) for c, f in zip(checked, fetched, strict=True)):
            return True
        _tally(out, key, policy, log_id, targets, checked, len(eps), base_problems)
        return False

    out._verdict = verdict
    return out


def _tally(out: StampOutcome, key: SigningKey, policy: Policy, log_id: str, targets: Sequence[Entry],
           results: Sequence[Fetched], per_target: int, base_problems: list[str]) -> None:
    """Fill `out` from the tokens obtained: one signed `timestamp` entry per target that got any, the TSAs
    that gave one, the problems, and the targets left pending."""
    out.problems = list(base_problems)
    out.tsas, out.pending = {}, []
    bodies: list[dict[str, Any]] = []
    for n, t in enumerate(targets):
        got = results[n * per_target:(n + 1) * per_target]
        tokens = [(f.tsa, f.tsr) for f in got if f.tsr is not None]
        for f in got:
            if f.error is not None:
                problem = f"TSA {f.tsa}: {f.error.code}: {f.error.cause}"
                if problem not in out.problems:
                    out.problems.append(problem)
        out.tsas[t.id] = sorted(name for name, _ in tokens)
        if len(tokens) < policy.tokens(t.type) and t.type not in NO_TOKEN_TYPES:
            out.pending.append(t.id)
        if tokens:
            bodies.append(timestamp_body(log_id, tokens, entry=t.id))
    out.entries = sign_bodies(key, bodies)


def keep_known(stamps: Sequence[Entry], policy: Policy) -> list[Entry]:
    """The timestamp entries whose every token names a TSA of `policy` (used when the policy changed between
    fetching and appending: a token from a TSA the new policy dropped would fail as VM-TSA-UNKNOWN)."""
    names = {t.name for t in policy.tsas}
    return [s for s in stamps if all(t["tsa"] in names for t in s.body.get("tokens", []))]


# --- doctor ---------------------------------------------------------------------------------------------

def expiry_warnings(book: TokenBook, policy: Policy, *, horizon_days: int = 90) -> list[str]:
    """TSA certificates (the policy's CA, the signer seen in the newest token) expiring within the horizon
    while no archive timestamp newer than the newest entry timestamp, made by a certificate that outlives
    the horizon, protects the tokens made so far."""
    return warnings_from_facts(expiry_facts(book, policy), book.now, horizon_days=horizon_days)


def expiry_facts(book: TokenBook, policy: Policy) -> dict[str, Any]:
    """What expiry_warnings judges, as JSON that `doctor` remembers between runs (they change only when a
    policy or timestamp entry is appended; the warnings also change with the clock): `cover`, the latest
    signer notAfter of a valid archive timestamp newer than the newest entry timestamp; `items`, each
    [tsa, certificate, notAfter] that may expire."""
    from cryptography import x509

    newest_entry_stamp = max((s for s, st in book.stamps.items() if st.entry is not None), default=-1)
    covers = [v.info.signer_not_after for a in book.archives if a > newest_entry_stamp
              for v in book.verdicts(a) if v.ok and v.info is not None]
    items: list[list[str]] = []
    for t in policy.tsas:
        try:
            ca = x509.load_pem_x509_certificate(t.ca_cert.encode())
            items.append([t.name, f"CA certificate {ca.subject.rfc4514_string()!r}", iso(ca.not_valid_after_utc)])
        except ValueError:
            pass
        for seq in sorted(book.stamps, reverse=True):
            if all(name != t.name for name, _ in book.stamps[seq].tokens):
                continue  # judge only the newest timestamp entries holding a token from this TSA
            newest = next((v for v in book.verdicts(seq) if v.tsa == t.name and v.info is not None), None)
            if newest is not None and newest.info is not None:
                items.append([t.name, f"signer certificate {newest.info.signer_subject!r} (newest token, "
                              f"timestamp entry #{seq})", iso(newest.info.signer_not_after)])
                break
    return {"tsas": [t.name for t in policy.tsas], "cover": iso(max(covers)) if covers else None, "items": items}


def warnings_from_facts(facts: dict[str, Any], now: datetime, *, horizon_days: int = 90) -> list[str]:
    """The expiry warnings `facts` (expiry_facts) imply at `now`."""
    horizon = now + timedelta(days=horizon_days)
    if facts.get("cover") is not None and from_iso(facts["cover"]) > horizon:
        return []
    warnings: list[str] = []
    for name, what, text in facts.get("items", []):
        not_after = from_iso(text)
        if not_after > horizon:
            continue
        when = "expired" if not_after <= now else "expires"
        days = (not_after - now).days
        warnings.append(
            f"TSA {name}: {what} {when} {iso(not_after)} ({days} days); no archive timestamp newer than "
            "the newest token protects the tokens made so far: run `git vaultmesh timestamp --archive` "
            "with a TSA whose certificate outlives it, and renew the TSA in the policy")
    return warnings


def doctor_facts(log_id: str | None, entries: Sequence[Entry | None]) -> dict[str, Any]:
    """expiry_facts of a whole log, under its final policy (as claimed); no TSA in it: nothing to expire."""
    from ..policy import claimed_timeline

    timeline = claimed_timeline(entries)
    if log_id is None or timeline.final is None or not timeline.final.tsas:
        return {"tsas": [], "cover": None, "items": []}
    book = TokenBook([e.line if e is not None else b"" for e in entries], entries, timeline.policies, log_id,
                     now=datetime.now(timezone.utc))
    return expiry_facts(book, timeline.final)
