#!/usr/bin/env python3
"""verify_standalone.py: an independent verifier of a git-vaultmesh ledger, for auditors.

    python verify_standalone.py [--repo PATH] --trust-root FPR [--release TAG]

Python 3.10+ standard library only, plus stock `git`, `gpgv` and (for SSH signatures) `ssh-keygen`; no code
shared with git_vaultmesh. Written from docs/formats.md: where it and `git vaultmesh verify`
disagree, one of them has a bug. One line per check; exit 0 only if every check passed. It always checks the
whole log (layout, canonical form, checkpoints, append-only history, the policy chain from the trust root,
every signature and threshold); --release adds the tag, the history tree (with its base releases) and the
Git-EVTag digest. Not checked: RFC 3161 tokens (CMS needs a crypto library; a "skip" line says so), notes,
a clone's rollback state, signatures of checkpoints below the head. Git runs with GIT_NO_REPLACE_OBJECTS=1
and every object read is re-hashed against its id.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import hashlib
import heapq
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

LOG_REF = "refs/vaultmesh/log"
# formats: "entries/<a>/<b>/<seq>.json ... a = seq // 1000000, b = (seq // 1000) % 1000, each 3 digits,
# <seq> 12 digits, zero-padded: path order is log order"
ENTRY_PATH = re.compile(r"entries/(\d{3})/(\d{3})/(\d{12})\.json")
# The body fields each entry type may carry (docs/formats.md; git_vaultmesh/entry.py ALLOWED_FIELDS).
COMMON = {"type", "log", "recorded_at", "component", "version", "subject", "artifacts", "evidence", "message"}
ALLOWED_FIELDS = {
    "policy": COMMON | {"signers", "thresholds", "tsas", "tokens_required", "note_keys"},
    "release": COMMON | {"history", "tree_digest", "submodules"},
    "deploy": COMMON | {"environment"},
    "adr": COMMON | {"title", "status", "document", "number", "supersedes"},
    "decision": COMMON | {"title", "status", "number", "supersedes"},
    "cosign": {"type", "log", "recorded_at", "entry", "message"},
    "timestamp": {"type", "log", "recorded_at", "entry", "checkpoint", "tokens", "message"},
    "witness": COMMON | {"peer", "checkpoint", "checkpoint_sig", "cosignature", "consistency"},
    "merge": COMMON | {"peer", "entries"},
    "import": COMMON | {"source", "original", "verified", "unverified"},
}
NO_THRESHOLD_TYPES = {"policy", "cosign", "timestamp", "witness"}  # a policy is judged when adopted
FINGERPRINT = {"openpgp": re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}"), "ssh": re.compile(r"SHA256:[A-Za-z0-9+/]{43}")}


def entry_path(seq: int) -> str:
    return f"entries/{seq // 1_000_000:03d}/{(seq // 1000) % 1000:03d}/{seq:012d}.json"


def checkpoint_text(log_id: str, size: int, root: bytes) -> bytes:
    """C2SP tlog-checkpoint body: "vaultmesh/<log_id>\\n<size>\\n<base64 root>\\n"."""
    return f"vaultmesh/{log_id}\n{size}\n{base64.b64encode(root).decode()}\n".encode()


def checkpoint_matches(cp: bytes, log_id: str, leaves: list[bytes], is_policy: list[bool]) -> bool:
    """docs/formats.md: the checkpoint of these entries, either as written before policy commitments (three
    lines) or with the extension line "policy <n> <base64 root>": n policy entries, root over their leaves."""
    body = checkpoint_text(log_id, len(leaves), mth(leaves))
    policy_leaves = [leaf for leaf, p in zip(leaves, is_policy) if p]
    extended = body + f"policy {len(policy_leaves)} {base64.b64encode(mth(policy_leaves)).decode()}\n".encode()
    return cp in (body, extended)


class Fail(Exception):
    """A check failed; the message says what was found against what was required."""


FAILED: list[str] = []


def report(check: str, ok: bool, detail: str) -> bool:
    print(f"{'ok  ' if ok else 'FAIL'} {check}: {detail}", flush=True)
    if not ok and check not in FAILED:
        FAILED.append(check)
    return ok


# --- git ----------------------------------------------------------------------------------------------------


class Git:
    """`git -C repo ...`, and one long-lived `git cat-file --batch` whose every answer is re-hashed."""

    def __init__(self, repo: str) -> None:
        self.repo, self.env = repo, dict(os.environ, GIT_NO_REPLACE_OBJECTS="1")
        self._batch: subprocess.Popen[bytes] | None = None

    def run(self, *args: str, check: bool = True) -> str:
        res = subprocess.run(["git", "-C", self.repo, *args], capture_output=True, env=self.env)
        if check and res.returncode != 0:
            raise Fail(f"git {' '.join(args)}: {res.stderr.decode(errors='replace').strip()}")
        return res.stdout.decode() if res.returncode == 0 else ""

    def ok(self, *args: str) -> bool:
        return subprocess.run(["git", "-C", self.repo, *args], capture_output=True, env=self.env).returncode == 0

    def obj(self, name: str) -> tuple[str, bytes] | None:
        """(type, body) of the object `name` (an id or "rev:path"); None when absent."""
        if self._batch is None:
            self._batch = subprocess.Popen(["git", "-C", self.repo, "cat-file", "--batch"], env=self.env,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._batch.stdin is not None and self._batch.stdout is not None
        self._batch.stdin.write(name.encode() + b"\n")
        self._batch.stdin.flush()
        header = self._batch.stdout.readline().split()
        if len(header) != 3:  # "<name> missing"
            return None
        oid, typ, size = header[0].decode(), header[1].decode(), int(header[2])
        body = self._batch.stdout.read(size + 1)[:-1]
        # an object id is the SHA-1 (or SHA-256) of "<type> <size>\0" + body
        if (hashlib.sha256 if len(oid) == 64 else hashlib.sha1)(f"{typ} {size}\0".encode() + body).hexdigest() != oid:
            raise Fail(f"object {oid} does not hash to its id (corrupt object store)")
        return typ, body

    def close(self) -> None:
        if self._batch is not None and self._batch.stdin is not None:
            self._batch.stdin.close()
            self._batch.wait()
        self._batch = None


# --- RFC 8785 (JCS), for the values entries contain -----------------------------------------------------------

# §3.2.2.2: escape '"' and '\', the short forms \b \t \n \f \r, every other control character below U+0020
# as \u00xx (lowercase hex); everything else is written as is (U+007F and U+2028 included), in UTF-8.
SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def jcs_string(s: str) -> str:
    return '"' + "".join(SHORT_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if c < " " else c) for c in s) + '"'


def jcs(value: Any) -> str:
    if value is None or value is True or value is False:
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        # §3.2.2.3 writes numbers as ES6 doubles: integers are exact only within ±(2^53 - 1) (I-JSON)
        if abs(value) > 2**53 - 1:
            raise ValueError(f"integer {value} is outside the I-JSON range")
        return str(value)
    if isinstance(value, str):
        return jcs_string(value)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):  # §3.2.3: members sorted by name, compared as arrays of UTF-16 code units
        names = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(jcs_string(k) + ":" + jcs(value[k]) for k in names) + "}"
    raise ValueError(f"{type(value).__name__} values (floats included) do not occur in entries")


def jcs_bytes(value: Any) -> bytes:
    return jcs(value).encode("utf-8")  # strict: a lone surrogate raises


def parse_strict(text: str) -> Any:
    """json.loads refusing duplicate names, floats, NaN and Infinity."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError(f"duplicate key in {[k for k, _ in pairs]}")
        return dict(pairs)

    def no_float(token: str) -> Any:
        raise ValueError(f"number {token} is not an integer")

    return json.loads(text, object_pairs_hook=no_duplicates, parse_float=no_float, parse_constant=no_float)


# --- RFC 6962 / RFC 9162 Merkle trees -------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()  # "leaf = SHA-256(0x00 || data)"


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()  # "node = SHA-256(0x01 || left || right)"


def mth(hashes: list[bytes]) -> bytes:
    """MTH over leaf hashes, "split at the largest power of two smaller than n"; MTH({}) = SHA-256("")."""
    if len(hashes) <= 1:
        return hashes[0] if hashes else hashlib.sha256(b"").digest()
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


class Frontier:
    """A compact range: the roots of the perfect subtrees of a tree of `size` leaves, largest first."""

    def __init__(self, size: int = 0, hashes: list[bytes] | None = None) -> None:
        self.size, self.hashes = size, list(hashes or [])
        if len(self.hashes) != bin(size).count("1"):
            raise ValueError(f"a frontier of size {size} has {bin(size).count('1')} hashes, not {len(self.hashes)}")

    def append(self, leaf: bytes) -> None:
        s, h = self.size, leaf
        while s & 1:  # each trailing 1 bit is a perfect subtree that the new leaf completes
            h, s = node_hash(self.hashes.pop(), h), s >> 1
        self.hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        r = self.hashes[-1] if self.hashes else mth([])
        for h in reversed(self.hashes[:-1]):
            r = node_hash(h, r)
        return r


def verify_consistency(m: int, n: int, old: bytes, new: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 §2.1.4.2 step by step (and: sizes 0 and equal sizes take an empty proof)."""
    if m == 0 or m == n:
        return not proof and (m != 0 or old == mth([])) and (m != n or old == new)
    if not 0 < m < n or not proof:
        return False
    path = ([old] if m & (m - 1) == 0 else []) + proof  # 2. a perfect old tree is itself a node of the new
    fn, sn = m - 1, n - 1  # 3.
    while fn & 1:  # 4.
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]  # 5.
    for c in path[1:]:  # 6.
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == old and sr == new and sn == 0  # 7.


# --- signatures: gpgv and ssh-keygen, against the keys of the log's policy entries only ------------------------


def dearmor(text: str) -> bytes:
    """The binary packets of an ASCII-armoured block, as `gpg --dearmor` writes them (RFC 4880 §6.2)."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    if len(lines) < 3 or not lines[0].startswith("-----BEGIN ") or not lines[-1].startswith("-----END "):
        raise ValueError("not an armoured block")
    body = lines[1:-1]
    body = body[body.index("") + 1:] if "" in body else body  # armour headers end at the first blank line
    return base64.b64decode("".join(ln for ln in body if not (ln.startswith("=") and len(ln) == 5)), validate=True)


def ssh_fingerprint(key_line: str) -> str:
    """"SHA256:" + unpadded base64 of SHA-256(key blob), as `ssh-keygen -l` prints it."""
    blob = base64.b64decode(key_line.split()[1], validate=True)
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


class Signatures:
    """A keyring for gpgv and an allowed-signers file for ssh-keygen, built from policy entries only."""

    def __init__(self, policies: list[dict[str, Any]]) -> None:
        self.dir = tempfile.mkdtemp(prefix="vmsa-")
        self.keyring, self.allowed = os.path.join(self.dir, "pinned.gpg"), os.path.join(self.dir, "allowed")
        with open(self.keyring, "wb") as kr, open(self.allowed, "w") as al:
            for body in reversed(policies):  # newest copy of a key first: gpgv uses the first it finds
                for s in body.get("signers") or []:
                    try:
                        if s["format"] == "openpgp":
                            kr.write(dearmor(s["public_key"]))
                        elif s["format"] == "ssh" and ssh_fingerprint(s["public_key"]) == s["fingerprint"]:
                            al.write(f'{s["fingerprint"]} namespaces="vaultmesh" {s["public_key"].strip()}\n')
                    except (KeyError, TypeError, ValueError, IndexError):
                        pass  # unusable key material verifies nothing: that signer's signatures fail

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def verify(self, fmt: str, sig: bytes, data: bytes, at: int | None = None) -> str:
        """The fingerprint (OpenPGP: primary key) that made `sig` over `data`; raises Fail otherwise."""
        sig_file = os.path.join(self.dir, "sig")
        with open(sig_file, "wb") as fh:
            fh.write(sig)
        if fmt == "ssh":
            return self._ssh(sig_file, data)
        if fmt != "openpgp":
            raise Fail(f"unknown signature format {fmt!r}")
        res = subprocess.run(["gpgv", "--homedir", self.dir, "--status-fd", "1", "--keyring", self.keyring,
                              sig_file, "-"], input=data, capture_output=True)
        status = [ln[9:].split(" ") for ln in res.stdout.decode(errors="replace").splitlines()
                  if ln.startswith("[GNUPG:] ")]
        words = [s[0] for s in status]
        valid = next((s for s in status if s[0] == "VALIDSIG" and len(s) >= 11), None)
        if words.count("NEWSIG") != 1:
            raise Fail("not exactly one OpenPGP signature")
        if "ERRSIG" in words:
            raise Fail("made by a key that no policy entry pins (gpgv: no public key)")
        if "BADSIG" in words or valid is None:
            raise Fail("BAD signature: it does not match the data")
        if "REVKEYSIG" in words or "EXPSIG" in words:
            raise Fail("made by a revoked key, or the signature itself has expired")
        # VALIDSIG <fpr> <date> <sig-time> <expire> <version> <reserved> <pk-algo> <hash-algo> <class> <primary>
        sig_time, hash_algo, sig_class, primary = int(valid[3]), valid[8], valid[9], valid[10]
        if sig_class != "00":
            raise Fail(f"signature class 0x{sig_class} is not a binary-document signature (0x00)")
        if hash_algo in ("1", "2", "3"):
            raise Fail("signature uses a broken digest (MD5, SHA-1 or RIPEMD-160)")
        if "EXPKEYSIG" in words:  # expired now: good if the key was valid when it signed and at recorded_at
            expiry = min((int(s[1]) for s in status if s[0] == "KEYEXPIRED" and len(s) > 1), default=0)
            if expiry <= sig_time or (at is not None and expiry <= at):
                raise Fail(f"key {primary} had expired when it signed")
        elif "GOODSIG" not in words:
            raise Fail("gpgv reported no good signature")
        return primary

    def _ssh(self, sig_file: str, data: bytes) -> str:
        found = subprocess.run(["ssh-keygen", "-Y", "find-principals", "-f", self.allowed, "-s", sig_file],
                               capture_output=True)
        principals = found.stdout.decode().split()
        if found.returncode != 0 or len(principals) != 1:
            raise Fail("made by an SSH key that no policy entry pins")
        res = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", self.allowed, "-I", principals[0], "-n",
                              "vaultmesh", "-s", sig_file], input=data, capture_output=True)
        if res.returncode != 0:
            raise Fail(f"SSH signature by {principals[0]} does not verify in namespace \"vaultmesh\"")
        return principals[0]


# --- policies: "Trust lives only in policy entries" (docs/formats.md) --------------------------------------------


class Policy:
    def __init__(self, body: dict[str, Any]) -> None:
        self.types: dict[str, list[str]] = {}  # fingerprint -> entry types it may sign ("*": all)
        for s in body.get("signers") or [None]:
            if not isinstance(s, dict) or set(s) != {"name", "format", "fingerprint", "public_key", "types"} \
                    or s["format"] not in FINGERPRINT or not FINGERPRINT[s["format"]].fullmatch(s["fingerprint"]) \
                    or s["fingerprint"] in self.types or not isinstance(s["types"], list) or not s["types"]:
                raise Fail("policy signers must be a non-empty list of distinct "
                           "{name, format, fingerprint, public_key, types}")
            self.types[s["fingerprint"]] = s["types"]
        self.thresholds = body.get("thresholds", {"*": 1})
        for typ, k in (self.thresholds if isinstance(self.thresholds, dict) else {"thresholds": None}).items():
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 64:
                raise Fail(f"policy threshold {typ!r}: {k!r} is not an integer from 1 to 64")
            if k > sum(1 for f in self.types if typ == "*" or self.may_sign(f, typ)):
                raise Fail(f"policy threshold {k} for {typ!r} exceeds the signers who may sign it")

    def may_sign(self, fpr: str, typ: str) -> bool:
        return fpr in self.types and ("*" in self.types[fpr] or typ in self.types[fpr])

    def met(self, typ: str, signers: set[str]) -> tuple[bool, str]:
        """k of n *distinct* signers that the policy allows for this type."""
        counted = sorted(f for f in signers if self.may_sign(f, typ))
        need = int(self.thresholds.get(typ, self.thresholds.get("*", 1)))
        return len(counted) >= need, f"{len(counted)} of required {need} ({', '.join(counted) or 'none'})"


def signers_of(sigs: Signatures, e: dict[str, Any], policy: Policy, where: str, auth: str) -> set[str]:
    """Fingerprints with valid signatures over JCS(body); every signature must be good, and by a signer the
    policy in force allows for type `auth` (the entry's type; for a cosign, the co-signed entry's type)."""
    if not e["sigs"]:
        raise Fail(f"{where}: no signature (absent)")
    try:
        at = calendar.timegm(time.strptime(e["body"]["recorded_at"], "%Y-%m-%dT%H:%M:%SZ"))
    except (KeyError, TypeError, ValueError):
        at = None
    good = set()
    for s in e["sigs"]:
        try:  # `sig` is base64 of a binary OpenPGP signature, or of SSHSIG armour
            fpr = sigs.verify(s["format"], base64.b64decode(s["sig"], validate=True), jcs_bytes(e["body"]), at)
        except (Fail, ValueError) as exc:
            raise Fail(f"{where}: signature claimed by {s['signer']}: {exc}") from None
        if fpr != s["signer"]:
            raise Fail(f"{where}: signature names signer {s['signer']} but was made by {fpr}")
        if not policy.may_sign(fpr, auth):
            raise Fail(f"{where}: {fpr} may not sign {auth} entries under the policy in force")
        good.add(fpr)
    return good


# --- the log -------------------------------------------------------------------------------------------------


def read_log(git: Git) -> tuple[list[bytes], bytes, bytes]:
    """(entry blobs, checkpoint, checkpoint.sig) of the log head; the tree layout must be exact."""
    entries: dict[int, str] = {}
    files: dict[str, str] = {}
    for rec in filter(None, git.run("ls-tree", "-r", "-z", "--full-tree", LOG_REF).split("\0")):
        meta, path = rec.split("\t", 1)
        mode, _, oid = meta.split()
        m = ENTRY_PATH.fullmatch(path)
        if mode != "100644":
            raise Fail(f"{path} has mode {mode}; the log holds only regular files (100644)")
        if path in ("checkpoint", "checkpoint.sig", "checkpoint.note"):  # the note: Ed25519, not checked here
            files[path] = oid
        elif m and entry_path(int(m.group(3))) == path:
            entries[int(m.group(3))] = oid
        else:
            raise Fail(f"unexpected path {path!r}: the log holds entries/<a>/<b>/<seq>.json, checkpoint(.sig)")
    if sorted(entries) != list(range(len(entries))):
        raise Fail(f"entry #{min(set(range(len(entries) + 1)) - set(entries))} is missing: seq runs from 0")
    if not {"checkpoint", "checkpoint.sig"} <= set(files) <= {"checkpoint", "checkpoint.sig", "checkpoint.note"}:
        raise Fail("checkpoint or checkpoint.sig is absent")
    blobs = [git.obj(entries[seq]) for seq in range(len(entries))] + [git.obj(files["checkpoint"]),
                                                                      git.obj(files["checkpoint.sig"])]
    if None in blobs:
        raise Fail("a blob of the log tree is missing from the object store")
    report("log.layout", True, f"{len(entries)} entries at entries/<a>/<b>/<seq>.json, seq 0..{len(entries) - 1}")
    data = [b[1] for b in blobs if b is not None]
    return data[:-2], data[-2], data[-1]


def parse_entry(blob: bytes, seq: int, log_id: str | None) -> dict[str, Any]:
    """An entry file is one line + "\\n": RFC 8785 canonical {"v":1,"body":{...},"sigs":[...]}."""
    if not blob.endswith(b"\n") or b"\n" in blob[:-1] or len(blob) > 1 << 20:
        raise Fail(f"entry #{seq}: an entry file is exactly one line ending in \\n (at most 1 MiB)")
    try:
        obj = parse_strict(blob[:-1].decode("utf-8"))
        if jcs_bytes(obj) != blob[:-1]:
            raise ValueError("not in RFC 8785 canonical form")
    except (UnicodeError, ValueError) as exc:
        raise Fail(f"entry #{seq}: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != {"v", "body", "sigs"} or obj["v"] != 1 or obj["v"] is True:
        raise Fail(f"entry #{seq}: the top level must be exactly {{v: 1, body, sigs}}")
    body, sigs = obj["body"], obj["sigs"]
    if not isinstance(body, dict) or body.get("type") not in ALLOWED_FIELDS:
        raise Fail(f"entry #{seq}: body.type is not one of {', '.join(ALLOWED_FIELDS)}")
    if set(body) - ALLOWED_FIELDS[body["type"]]:
        raise Fail(f"entry #{seq}: unknown field(s) {sorted(set(body) - ALLOWED_FIELDS[body['type']])}")
    if not isinstance(body.get("log"), str) or body["log"] != (log_id or body["log"]):
        raise Fail(f"entry #{seq}: names log {body.get('log')!r}, this log is {log_id} (replayed entry)")
    if not isinstance(sigs, list) or not all(isinstance(s, dict) and set(s) == {"format", "signer", "sig"}
                                             and all(isinstance(v, str) for v in s.values()) for s in sigs):
        raise Fail(f"entry #{seq}: sigs must be a list of {{format, signer, sig}} strings")
    return obj


def check_chain(git: Git, leaves: list[bytes], log_id: str, is_policy: list[bool]) -> list[int]:
    """formats: "every new log commit's tree contains all previous entries unchanged": each log commit only
    adds the next entries, and its checkpoint is that of exactly the entries it then holds."""
    out = git.run("log", "--first-parent", "--reverse", "--raw", "--no-renames", "--no-abbrev", "--root",
                  "--format=C %H %P", LOG_REF)
    commits: list[tuple[str, list[int]]] = []
    for line in out.splitlines():
        if line.startswith("C "):
            if len(line.split()) > 3:
                raise Fail(f"log commit {line.split()[1][:12]} is a merge; the log is a single chain")
            commits.append((line.split()[1], []))
        elif line.startswith(":"):
            meta, path = line.split("\t", 1)
            status, m = meta.split()[-1], ENTRY_PATH.fullmatch(path)
            if status == "A" and m:
                commits[-1][1].append(int(m.group(3)))
            elif not (path in ("checkpoint", "checkpoint.sig") and status in ("A", "M")
                      or path == "checkpoint.note" and status in ("A", "M", "D")):
                raise Fail(f"log commit {commits[-1][0][:12]} changes {path} ({status}): appends only add entries")
    frontier, sizes = Frontier(), []
    for commit, added in commits:
        if sorted(added) != list(range(frontier.size, frontier.size + len(added))):
            raise Fail(f"log commit {commit[:12]} adds entries {sorted(added)} after size {frontier.size}")
        for leaf in leaves[frontier.size:frontier.size + len(added)]:
            frontier.append(leaf)
        cp = git.obj(f"{commit}:checkpoint")
        size = frontier.size
        if cp is None or not checkpoint_matches(cp[1], log_id, leaves[:size], is_policy[:size]):
            raise Fail(f"log commit {commit[:12]}: its checkpoint is not that of its {frontier.size} entries")
        sizes.append(frontier.size)
    report("log.append-only", True, f"{len(commits)} log commit(s), each adds entries and checkpoints them")
    return [0] + sizes


def judge(sigs: Signatures, entries: list[dict[str, Any] | None], trust_root: str) -> list[Policy] | None:
    """formats: the genesis is signed by the trust root; a later policy counts only if signed by the threshold
    of the one before; each entry needs the threshold of the policy in force at its position, cosigns counted."""
    genesis = entries[0]
    try:
        if genesis is None or genesis["body"]["type"] != "policy":
            raise Fail("entry #0 is unreadable or not a policy entry")
        policy = Policy(genesis["body"])
        g_signers = signers_of(sigs, genesis, policy, "entry #0", "policy")
        ok, detail = policy.met("policy", g_signers)
        if not ok:
            raise Fail(f"genesis policy is self-signed by {detail}")
    except Fail as exc:
        report("log.genesis", False, str(exc))
        return None
    report("log.genesis", True, f"genesis policy signed by {detail}")
    # policy_at[i] is the policy in force at position i: the last policy entry before i validly adopted
    root = trust_root if trust_root.startswith("SHA256:") else trust_root.upper()
    report("log.trust-root", root in g_signers, f"genesis signed by {', '.join(sorted(g_signers))}; "
           f"trust root {trust_root}")
    policy_at, signed_by = [policy], {0: g_signers}
    by_digest = {hashlib.sha256(jcs_bytes(genesis["body"])).hexdigest(): 0}  # body digest = SHA-256(JCS(body))
    releases: dict[str, int] = {}
    failed: set[str] = set()

    def fail(check: str, detail: str) -> None:
        failed.add(check)
        report(check, False, detail)

    for seq, e in enumerate(entries[1:], start=1):
        policy_at.append(policy)
        if e is None:
            continue
        body, where = e["body"], f"entry #{seq} ({e['body']['type']})"
        digest = hashlib.sha256(jcs_bytes(body)).hexdigest()
        ref = body["subject"].get("ref") if isinstance(body.get("subject"), dict) else None
        if digest in by_digest or (body["type"] == "release" and ref in releases):  # "One release per tag"
            fail("entry.unique", f"{where} repeats entry #{by_digest.get(digest, releases.get(str(ref)))}")
            continue
        by_digest[digest] = seq
        releases.update({ref: seq} if body["type"] == "release" else {})
        target = by_digest.get(str(body.get("entry"))) if body["type"] == "cosign" else None
        try:
            if body["type"] == "cosign" and target is None:
                raise Fail(f"{where} co-signs {body.get('entry')}, which is no earlier entry")
            auth = entries[target]["body"]["type"] if target is not None else body["type"]  # type: ignore[index]
            good = signers_of(sigs, e, policy, where, auth)
        except Fail as exc:
            fail("entry.signatures", str(exc))
            continue
        signed_by.setdefault(seq, set()).update(good)
        if body["type"] == "policy":
            ok, detail = policy.met("policy", good)
            try:
                policy = Policy(body) if ok else policy
            except Fail as exc:
                ok, detail = False, str(exc)
            if not ok:
                fail("policy.authorized", f"{where}: policy change not adopted: {detail}")
        elif target is not None:  # a cosigner counts if pinned both at the co-signed entry and at the cosign
            signed_by.setdefault(target, set()).update(f for f in good if f in policy_at[target].types)
    for seq, e in enumerate(entries):
        if e is not None and seq in signed_by and e["body"]["type"] not in NO_THRESHOLD_TYPES:
            ok, detail = policy_at[seq].met(e["body"]["type"], signed_by[seq])
            if not ok:
                fail("entry.threshold", f"entry #{seq} ({e['body']['type']}): pending signatures: {detail}")
    for check in ("entry.unique", "entry.signatures", "policy.authorized", "entry.threshold"):
        if check not in failed:
            report(check, True, f"all {len(entries)} entries pass")
    return policy_at + [policy]


# --- releases: the history tree (docs/formats.md) -------------------------------------------


def history_leaves(git: Git, commit: str, base: str | None) -> list[bytes]:
    """Order vaultmesh-topo-v1: the commits reachable from `commit` and not from `base`, parents before
    children, ties by ascending id (Kahn with a min-heap). Leaf data = the raw `git cat-file commit` bytes."""
    parents = {ln.split()[0]: ln.split()[1:] for ln in git.run(
        "rev-list", "--parents", commit, *([f"^{base}"] if base else [])).splitlines()}
    children: dict[str, list[str]] = {c: [] for c in parents}
    indegree = dict.fromkeys(parents, 0)
    for c, ps in parents.items():
        for p in ps:
            if p in parents:  # a parent outside the set is among the base's leaves already
                children[p].append(c)
                indegree[c] += 1
    ready = [c for c, k in indegree.items() if k == 0]
    heapq.heapify(ready)
    leaves = []
    while ready:
        c = heapq.heappop(ready)
        leaves.append(leaf_hash((git.obj(c) or ("", b""))[1]))
        for child in children[c]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, child)
    return leaves


def evtag(git: Git, commit: str, not_included_ok: bool) -> str:
    """Git-EVTag-v0-SHA512: SHA-512 over the commit object, its root tree, then a pre-order walk of that tree in
    stored entry order (a sub-tree before its contents, blobs included, a gitlink recursing into the
    submodule's repository); each object as its loose-object bytes "<type> <size>\\0" + body."""
    digest, opened = hashlib.sha512(), []

    def feed(g: Git, oid: str, want: str) -> bytes:
        got = g.obj(oid)
        if got is None or got[0] != want:
            raise Fail(f"{want} {oid} is missing")
        digest.update(f"{got[0]} {len(got[1])}\0".encode() + got[1])
        return got[1]

    def submodule(g: Git, path: str, oid: str) -> Git | None:
        top = g.run("rev-parse", "--show-toplevel", check=False).strip()
        for cand in [os.path.join(top, path)] * bool(top) + [os.path.join(g.run(
                "rev-parse", "--absolute-git-dir").strip(), "modules", path)]:
            if os.path.isdir(cand):
                opened.append(Git(cand))
                if (opened[-1].obj(oid) or ("",))[0] == "commit":
                    return opened[-1]
        return None

    def walk(g: Git, tree: str, path: str) -> None:
        body, pos, raw_len = feed(g, tree, "tree"), 0, len(tree) // 2
        while pos < len(body):  # tree entries: "<octal mode> <name>\0<raw id>"
            sp, nul = body.index(b" ", pos), body.index(b"\0", pos)
            kind, name = int(body[pos:sp], 8) & 0o170000, body[sp + 1:nul].decode(errors="surrogateescape")
            oid, pos = body[nul + 1:nul + 1 + raw_len].hex(), nul + 1 + raw_len
            if kind == 0o040000:
                walk(g, oid, f"{path}{name}/")
            elif kind == 0o160000:  # gitlink: the submodule's commit object, then its tree
                # "submodules": "not-included" means the digest was taken with every gitlink skipped
                sub = None if not_included_ok else submodule(g, path + name, oid)
                if sub is not None:
                    walk(sub, feed(sub, oid, "commit")[5:5 + 2 * raw_len].decode(), f"{path}{name}/")
                elif not not_included_ok:
                    raise Fail(f"submodule {path}{name} ({oid[:12]}) is absent, and the receipt includes it")
            else:
                feed(g, oid, "blob")

    try:
        walk(git, feed(git, commit, "commit").split(b"\n", 1)[0][5:].decode(), "")
    finally:
        for g in opened:
            g.close()
    return digest.hexdigest()


def check_release(git: Git, entries: list[dict[str, Any]], seq: int, ids: dict[str, int]) -> None:
    e = entries[seq]["body"]
    subj, hist = e["subject"], e["history"]
    name, commit = f"{subj.get('ref')} (entry #{seq})", subj.get("commit", "")
    now, expect = git.run("rev-parse", "--verify", "-q", subj.get("ref", ""), check=False).strip(), \
        subj.get("tag") or commit
    report("release.tag", now == expect, f"{name}: tag is {now or 'absent'}, recorded {expect}")
    replaced = git.run("for-each-ref", "--format=%(refname:lstrip=2)", "refs/replace/").split()
    if replaced:  # git checkout/log/archive honour replace refs: what users see is not what was recorded
        shown = set(replaced) & set(git.run("rev-list", "--objects", "--no-object-names", commit, check=False).split())
        report("release.replaced", not shown, f"{name}: refs/replace/ substitutes {len(shown)} of its objects")
    tree = git.run("rev-parse", "--verify", "-q", f"{commit}^{{tree}}", check=False).strip()
    if not report("release.tree", tree == subj.get("tree"), f"{name}: commit {commit[:12]} has tree "
                  f"{tree or 'absent'}, recorded {subj.get('tree')}"):
        return
    try:
        if hist.get("alg") != "rfc6962-sha256" or hist.get("order") != "vaultmesh-topo-v1":
            raise Fail("history must name alg rfc6962-sha256 and order vaultmesh-topo-v1")
        frontier, base_commit = Frontier(), None
        if "base" in hist:  # extend the base release's frontier, once the base is what it claims to be
            b = hist["base"]
            bseq = ids.get(b["entry"], seq)
            if bseq >= seq or entries[bseq]["body"]["type"] != "release":
                raise Fail(f"base {str(b['entry'])[:12]} is not an earlier release in this log")
            bh, base_commit = entries[bseq]["body"]["history"], entries[bseq]["body"]["subject"]["commit"]
            frontier = Frontier(bh["size"], [bytes.fromhex(h) for h in bh["frontier"]])
            if (b["size"], b["root"]) != (bh["size"], bh["root"]) or frontier.root().hex() != bh["root"]:
                raise Fail(f"base size/root differ from base entry #{bseq}'s own history")
            if not git.ok("merge-base", "--is-ancestor", base_commit, commit):
                raise Fail(f"base release #{bseq} ({base_commit[:12]}) is not an ancestor of {commit[:12]}")
            if not verify_consistency(bh["size"], hist["size"], bytes.fromhex(bh["root"]), bytes.fromhex(
                    hist["root"]), [bytes.fromhex(h) for h in hist.get("consistency", [])]):
                raise Fail(f"the consistency proof from base #{bseq} (size {bh['size']}) does not verify")
            report("release.base", True, f"{name}: extends release #{bseq} ({bh['size']} commits), consistent")
        for leaf in history_leaves(git, commit, base_commit):
            frontier.append(leaf)
        recorded = (hist["size"], hist["root"], hist["frontier"])
    except (Fail, KeyError, TypeError, ValueError) as exc:
        report("release.base" if "base" in hist else "release.history", False, f"{name}: {exc}")
        return
    got = (frontier.size, frontier.root().hex(), [h.hex() for h in frontier.hashes])
    report("release.history", got == recorded, f"{name}: recomputed {got[0]} commits, root {got[1][:16]}…; "
           f"recorded {recorded[0]}, root {str(recorded[1])[:16]}…")
    try:
        digest = evtag(git, commit, e.get("submodules") == "not-included")
        report("release.tree-digest", digest == e.get("tree_digest"), f"{name}: Git-EVTag-v0-SHA512 "
               f"{digest[:16]}…, recorded {str(e.get('tree_digest'))[:16]}…")
    except Fail as exc:
        report("release.tree-digest", False, f"{name}: {exc}")


def check_releases(git: Git, entries: list[dict[str, Any] | None], lines: list[bytes], release: str) -> None:
    """The release of `release` and its chain of base releases, oldest first."""
    ref = release if release.startswith("refs/") else f"refs/tags/{release}"
    known = [e or {"body": {"type": None}} for e in entries]  # an unreadable entry is no release
    found = [i for i, e in enumerate(known) if e["body"]["type"] == "release"
             and isinstance(e["body"].get("subject"), dict) and e["body"]["subject"].get("ref") == ref]
    if not report("release.recorded", bool(found), f"{ref}: " + (f"entry #{found[0]}" if found else "none")):
        return
    ids = {hashlib.sha256(line).hexdigest(): i for i, line in enumerate(lines)}  # entry id = SHA-256(line)
    chain = found[:1]
    while isinstance(base := known[chain[-1]]["body"]["history"].get("base"), dict) \
            and ids.get(base.get("entry"), chain[-1]) < chain[-1]:  # a bad base: check_release reports it
        chain.append(ids[base["entry"]])
    for seq in reversed(chain):
        check_release(git, known, seq, ids)


# --- main ----------------------------------------------------------------------------------------------------


def verify(git: Git, trust_root: str, release: str | None) -> None:
    try:
        blobs, cp, cp_sig = read_log(git)
    except Fail as exc:
        report("log.layout", False, str(exc))
        return
    entries: list[dict[str, Any] | None] = []
    for seq, blob in enumerate(blobs):
        try:
            entries.append(parse_entry(blob, seq, entries[0]["body"]["log"] if entries and entries[0] else None))
        except Fail as exc:
            report("entry.canonical", False, str(exc))
            entries.append(None)
    if not entries or entries[0] is None:
        report("log.genesis", False, "entry #0 is absent or unreadable")
        return
    if None not in entries:
        report("entry.canonical", True, f"{len(entries)} entries: one RFC 8785 line each, known types and fields")
    # The log's Merkle leaf is the entry line without its newline (the raw blob where that is malformed).
    lines = [b[:-1] if b.endswith(b"\n") else b for b in blobs]
    leaves, log_id = [leaf_hash(line) for line in lines], entries[0]["body"]["log"]
    root = mth(leaves)
    is_policy = [e is not None and e["body"]["type"] == "policy" for e in entries]
    cp_ok = checkpoint_matches(cp, log_id, leaves, is_policy)
    report("log.checkpoint", cp_ok, f"size {len(lines)} root {root.hex()}" + ("" if cp_ok else f"; checkpoint: {cp!r}"))
    try:
        before = check_chain(git, leaves, log_id, is_policy)[-2]  # the log size before the head append
    except Fail as exc:
        report("log.append-only", False, str(exc))
        before = len(lines)
    sigs = Signatures([e["body"] for e in entries if e is not None and e["body"]["type"] == "policy"])
    try:
        policy_at = judge(sigs, entries, trust_root)
        if policy_at is not None:  # the appender signs: pinned before its entries or after them
            try:
                fpr = sigs.verify("ssh" if b"BEGIN SSH SIGNATURE" in cp_sig else "openpgp", cp_sig, cp)
                if fpr not in policy_at[before].types and fpr not in policy_at[-1].types:
                    raise Fail(f"signed by {fpr}, whom neither the policy before the head append nor after pins")
                report("checkpoint.sig", True, f"head checkpoint signed by {fpr}")
            except Fail as exc:
                report("checkpoint.sig", False, str(exc))
    finally:
        sigs.close()
    if any(e is not None and (e["body"]["type"] == "timestamp" or any(e["body"].get("tokens_required") or []))
           for e in entries):
        print("skip tokens: RFC 3161 timestamp tokens are NOT checked by this verifier", flush=True)
    if release is not None:
        check_releases(git, entries, lines, release)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="stdlib-only verifier of a git-vaultmesh ledger")
    ap.add_argument("--repo", default=".", help="the repository (default: the current directory)")
    ap.add_argument("--trust-root", required=True, help="fingerprint of the genesis signer you trust")
    ap.add_argument("--release", metavar="TAG", help="also check this release's tag, history and tree digest")
    args = ap.parse_args(argv)
    FAILED.clear()
    git = Git(args.repo)
    try:
        verify(git, args.trust_root, args.release)
    except Fail as exc:  # git itself failed: not a repository, no ledger, ...
        report("git", False, str(exc))
    except FileNotFoundError as exc:
        report("tools", False, f"cannot run {exc.filename}: install git and gpgv (and ssh-keygen for SSH keys)")
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:  # fail closed on odd shapes
        report("entry.shape", False, f"unexpected entry shape ({type(exc).__name__}: {exc})")
    finally:
        git.close()
    print(f"verify_standalone: FAILED ({', '.join(FAILED)})" if FAILED else "verify_standalone: OK")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
