"""Sign with the user's OpenPGP or SSH key; verify against pinned keys only.

The old tool trusted whatever key sat in the user's keyring. Here a `Verifier` builds its own trust material
from the keys pinned in the ledger's policy entries (a throwaway keyring for `gpgv`, an allowed-signers file
for `ssh-keygen -Y verify`) and never reads the user's keyring, `~/.ssh/allowed_signers` or gpg.conf.

Every external program runs through `_run`, with a timeout: python-gnupg is not used here because it cannot
enforce one (its `_collect_output` joins its reader threads and waits for gpg without a limit), so a hung
gpg-agent or pinentry would hang `record` forever. gpg is called the way python-gnupg calls it (`--batch`,
status lines), just through `subprocess` with `timeout=`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Literal

from git_vaultmesh import timings
from git_vaultmesh.errors import VaultMeshError

Format = Literal["openpgp", "ssh"]
Status = Literal["valid", "invalid", "malformed", "unpinned", "expired", "revoked"]

NAMESPACE = "vaultmesh"  # the SSHSIG namespace of every vaultmesh signature (domain separation from git's)

# Caller-side mapping of a SigCheck status to its error code (None: the signature is fine).
STATUS_CODES: dict[str, str | None] = {
    "valid": None,
    "malformed": "VM-SIG-MALFORMED",
    "invalid": "VM-SIG-INVALID",
    "unpinned": "VM-SIG-UNPINNED",
    "expired": "VM-SIG-KEY-EXPIRED",
    "revoked": "VM-SIG-KEY-REVOKED",
}

_PGP_SIG_LABEL = "PGP SIGNATURE"
_SSH_SIG_LABEL = "SSH SIGNATURE"
_WEAK_PGP_DIGESTS = {"1": "MD5", "2": "SHA-1", "3": "RIPEMD-160"}  # collision-prone: never accepted
_UNUSABLE_VALIDITY = set("irde")  # invalid, revoked, disabled, expired (gpg --with-colons field 2)
_TOOL_HINTS = {
    "gpg": "install GnuPG 2.2 or later (the `gpg` program, usually package gnupg)",
    "gpgv": "install GnuPG's `gpgv` (package gpgv or gnupg)",
    "gpgconf": "install GnuPG 2.2 or later (package gnupg)",
    "ssh-keygen": "install the OpenSSH client, 8.2 or later (package openssh-client)",
}


# --------------------------------------------------------------------------------------------------
# public data types


@dataclass(frozen=True)
class SigningKey:
    """The key `record` signs with, resolved once from git config by `resolve_signing_key`."""

    format: Format
    key: str  # openpgp: what the user configured (id/fingerprint/uid); ssh: key path or "key::<public key>"
    fingerprint: str  # openpgp: primary fingerprint, 40 hex upper; ssh: "SHA256:..."
    public_key: str  # openpgp: armoured minimal export; ssh: "ssh-ed25519 AAAA... comment"
    timeout: float = 30.0  # seconds `sign` waits for gpg/gpg-agent or ssh-keygen (vaultmesh.gpgTimeout)


@dataclass(frozen=True)
class PinnedKey:
    """A signer key as a policy entry pins it: the only material a Verifier trusts."""

    format: Format
    fingerprint: str
    public_key: str


@dataclass(frozen=True)
class SigCheck:
    """The outcome of one verification; `STATUS_CODES` maps `status` to the caller's error code."""

    status: Status
    # The primary OpenPGP fingerprint / SSH fingerprint that made the signature, when known. For an unpinned
    # OpenPGP signature whose key we do not hold, this is the issuer fingerprint the signature names (which
    # may be a subkey's, and is unauthenticated).
    fingerprint: str | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == "valid"


class _Malformed(Exception):
    """Internal: the signature bytes are not a well-formed signature of the expected kind."""


# --------------------------------------------------------------------------------------------------
# running tools


_AGENT_HINT = (
    "is gpg-agent or pinentry waiting for a passphrase, or ssh-agent for a confirmation? "
    "Unlock the key (or restart the agent) and retry"
)
_LOCAL_HINT = "verification needs no agent or network: is the machine overloaded? Retry with a longer timeout"


def _run(
    argv: Sequence[str], *, timeout: float, input: bytes | None = None, hint: str = _AGENT_HINT
) -> subprocess.CompletedProcess[bytes]:
    """Run a tool with a hard timeout; map "not installed" and "hung" to their error codes."""
    tool = argv[0]
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise VaultMeshError(
            "VM-TOOL-MISSING", f"cannot run {tool!r}: {exc.strerror or exc}", _TOOL_HINTS.get(tool)
        ) from exc
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        try:  # a daemon it spawned (gpg-agent) could hold the pipes open: do not wait for it
            proc.communicate(timeout=1)
        except subprocess.TimeoutExpired:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            proc.wait()
        raise VaultMeshError(
            "VM-TOOL-TIMEOUT",
            f"{tool} did not finish within {timeout:g} s",
            hint,
        ) from exc
    _echo(tool, err)
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def _echo(tool: str, err: bytes) -> None:
    """gpg's and ssh-keygen's stderr (status chatter such as "checking the trustdb") stays captured: errors
    are reported through our own messages. Under `git vaultmesh -v` it is shown, prefixed with the tool."""
    if err and os.environ.get("GIT_VAULTMESH_VERBOSITY") == "verbose":
        for line in err.decode("utf-8", "replace").splitlines():
            if line.strip() and not line.startswith("[GNUPG:]"):
                print(f"{os.path.basename(tool)}: {line}", file=sys.stderr)


def _summarise(stderr: bytes, limit: int = 4) -> str:
    """The last few meaningful lines a tool printed, on one line."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("[GNUPG:]") and "faked system time" not in ln]
    return "; ".join(lines[-limit:]) or "(no message)"


def _status_lines(text: bytes) -> list[list[str]]:
    """GnuPG `--status-fd` lines (doc/DETAILS), split into [keyword, args...]."""
    result = []
    for raw in text.decode("utf-8", "replace").splitlines():
        if raw.startswith("[GNUPG:] "):
            result.append(raw[9:].split(" "))
    return result


def _short_tempdir(prefix: str) -> str:
    """A private temp dir with a short path (gpg socket paths are limited to ~100 bytes)."""
    base = tempfile.gettempdir()
    if len(base) > 40 and os.path.isdir("/tmp"):
        base = "/tmp"
    return tempfile.mkdtemp(prefix=prefix, dir=base)


# --------------------------------------------------------------------------------------------------
# encodings: armour, OpenPGP packet framing, SSHSIG, SSH public keys
#
# Hand-written on purpose: these are structural gates only (is this exactly one detached signature packet?
# which SSH key does this SSHSIG name?). The cryptography is always checked by gpgv or ssh-keygen.


def _crc24(data: bytes) -> int:
    """OpenPGP armour checksum (RFC 4880 §6.1)."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Malformed(f"not valid base64 ({exc})") from exc


def _dearmor(text: str, label: str) -> bytes:
    """Decode exactly one armoured block `label` (nothing else but whitespace around it)."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if len(lines) < 3 or lines[0] != begin or lines[-1] != end:
        raise _Malformed(f"not a single {label.lower()} armour block")
    body = lines[1:-1]
    if label == _PGP_SIG_LABEL:  # armour headers ("Key: value"), a blank line, base64, an optional "=CRC"
        while body and ":" in body[0]:
            body = body[1:]
        if body and body[0] == "":
            body = body[1:]
        crc: bytes | None = None
        if body and body[-1].startswith("="):
            crc = _b64(body[-1][1:])
            body = body[:-1]
        data = _b64("".join(body))
        if crc is not None and (len(crc) != 3 or int.from_bytes(crc, "big") != _crc24(data)):
            raise _Malformed("the armour checksum does not match (corrupted armour)")
        return data
    return _b64("".join(body))


def _pgp_packet_tags(data: bytes) -> list[int]:
    """The packet tags of an OpenPGP byte string (RFC 4880 §4.2); raises _Malformed on bad framing."""
    tags: list[int] = []
    i, n = 0, len(data)

    def take(count: int) -> int:
        nonlocal i
        if i + count > n:
            raise _Malformed("truncated OpenPGP packet header")
        value = int.from_bytes(data[i : i + count], "big")
        i += count
        return value

    while i < n:
        ctb = take(1)
        if not ctb & 0x80:
            raise _Malformed("not OpenPGP data (bad packet header)")
        if ctb & 0x40:  # new format
            tag = ctb & 0x3F
            first = take(1)
            if first < 192:
                length = first
            elif first < 224:
                length = ((first - 192) << 8) + take(1) + 192
            elif first == 255:
                length = take(4)
            else:
                raise _Malformed("partial-length packet: not a detached signature")
        else:
            tag = (ctb >> 2) & 0x0F
            kind = ctb & 0x03
            if kind == 3:
                raise _Malformed("indeterminate-length packet: not a detached signature")
            length = take((1, 2, 4)[kind])
        if i + length > n:
            raise _Malformed("truncated OpenPGP packet")
        tags.append(tag)
        i += length
    return tags


class _SshReader:
    """Reads the SSH wire encoding (RFC 4251 §5): uint32 and length-prefixed strings."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise _Malformed("truncated SSH signature")
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def string(self) -> bytes:
        size = self.u32()
        if self.pos + size > len(self.data):
            raise _Malformed("truncated SSH signature")
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return value

    def done(self) -> bool:
        return self.pos == len(self.data)


@dataclass(frozen=True)
class _SshSig:
    public_key: bytes
    namespace: str
    hash_algorithm: str


def _parse_sshsig(armoured: str) -> _SshSig:
    """Parse the SSHSIG armour (openssh PROTOCOL.sshsig) far enough to learn the key and namespace."""
    blob = _dearmor(armoured, _SSH_SIG_LABEL)
    if not blob.startswith(b"SSHSIG"):
        raise _Malformed("missing SSHSIG magic preamble")
    reader = _SshReader(blob[6:])
    version = reader.u32()
    if version != 1:
        raise _Malformed(f"unsupported SSHSIG version {version}")
    public_key, namespace, _reserved, hash_alg, signature = (reader.string() for _ in range(5))
    if not reader.done():
        raise _Malformed("trailing bytes after the SSH signature")
    if not public_key or not signature:
        raise _Malformed("SSH signature without key or signature blob")
    _ssh_key_type(public_key)
    try:
        return _SshSig(public_key, namespace.decode("utf-8"), hash_alg.decode("ascii"))
    except UnicodeDecodeError as exc:
        raise _Malformed("SSH signature namespace or hash algorithm is not text") from exc


def _ssh_key_type(blob: bytes) -> str:
    try:
        return _SshReader(blob).string().decode("ascii")
    except (_Malformed, UnicodeDecodeError) as exc:
        raise _Malformed("the SSH public key blob is malformed") from exc


def _ssh_blob_fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def _parse_ssh_public_key(line: str) -> tuple[str, bytes]:
    """("ssh-ed25519", blob) from "ssh-ed25519 AAAA... [comment]"; ValueError if it is not one."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError("not an SSH public key line (expected '<type> <base64> [comment]')")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        inner = _ssh_key_type(blob)
    except (binascii.Error, ValueError, _Malformed) as exc:
        raise ValueError(f"the SSH public key is not valid base64 key data: {exc}") from exc
    if inner != parts[0]:
        raise ValueError(f"the SSH public key says {parts[0]!r} but its data is a {inner!r} key")
    return parts[0], blob


def ssh_fingerprint(public_key_line: str) -> str:
    """"SHA256:<unpadded base64>" of an SSH public key line, as `ssh-keygen -l` prints it.

    Raises ValueError when the line is not an SSH public key (the caller picks the error code: a bad key in a
    policy is VM-POLICY-INVALID, a bad configured key VM-NO-SIGNING-KEY).
    """
    return _ssh_blob_fingerprint(_parse_ssh_public_key(public_key_line)[1])


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _norm_pgp_fpr(fpr: str) -> str:
    return "".join(fpr.split()).upper()


# --------------------------------------------------------------------------------------------------
# resolving and signing


def _gpg_base() -> list[str]:
    # No --homedir: gpg uses GNUPGHOME or its default, i.e. the user's own keyring (signing only).
    return ["gpg", "--batch", "--no-tty", "--no-verbose"]


@dataclass
class _ColonKey:
    kind: str  # pub/sec/sub/ssb
    validity: str
    created: int
    expires: int | None
    caps: str
    token: str
    fingerprint: str = ""


def _parse_gpg_time(value: str) -> int | None:
    """A gpg timestamp: seconds since the epoch, or ISO 8601 "20200101T000000" (doc/DETAILS); "" is none."""
    if not value or value == "0":
        return None
    if "T" in value:
        return int(datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc).timestamp())
    return int(value)


def _parse_colons(text: str) -> list[list[_ColonKey]]:
    """gpg --with-colons --fixed-list-mode key listing -> key blocks, primary first then subkeys."""
    blocks: list[list[_ColonKey]] = []
    last: _ColonKey | None = None
    for line in text.splitlines():
        f = line.split(":")
        if f[0] in ("pub", "sec", "sub", "ssb") and len(f) > 14:
            last = _ColonKey(f[0], f[1], _parse_gpg_time(f[5]) or 0, _parse_gpg_time(f[6]), f[11], f[14])
            if f[0] in ("pub", "sec"):
                blocks.append([last])
            elif blocks:
                blocks[-1].append(last)
        elif f[0] == "fpr" and last is not None and len(f) > 9 and not last.fingerprint:
            last.fingerprint = f[9].upper()
    return blocks


def resolve_signing_key(fmt: Format, key: str, timeout: float = 30.0) -> SigningKey:
    """Turn the configured key into a SigningKey; fail before anything is signed if it is unusable."""
    if fmt == "openpgp":
        return dataclasses.replace(_resolve_openpgp(key, timeout), timeout=timeout)
    if fmt == "ssh":
        return dataclasses.replace(_resolve_ssh(key, timeout), timeout=timeout)
    raise VaultMeshError("VM-CONFIG-INVALID", f"unknown signing format {fmt!r}", "use 'openpgp' or 'ssh'")


def _resolve_openpgp(key: str, timeout: float) -> SigningKey:
    spec = key.strip()
    hint = (
        "`gpg --list-secret-keys` must show a secret key for it; import it into GNUPGHOME, or set "
        "vaultmesh.signingKey (or user.signingkey) to the fingerprint of a key you can sign with"
    )
    if not spec:
        raise VaultMeshError("VM-NO-SIGNING-KEY", "the configured OpenPGP signing key is empty", hint)
    res = _run(
        [*_gpg_base(), "--with-colons", "--fixed-list-mode", "--with-fingerprint",
         "--with-subkey-fingerprint", "--list-secret-keys", "--", spec],
        timeout=timeout,
    )
    blocks = _parse_colons(res.stdout.decode("utf-8", "replace")) if res.returncode == 0 else []
    if not blocks:
        raise VaultMeshError(
            "VM-NO-SIGNING-KEY", f"no OpenPGP secret key matches {spec!r} ({_summarise(res.stderr)})", hint
        )

    def usable(block: list[_ColonKey]) -> bool:
        if block[0].validity in _UNUSABLE_VALIDITY:
            return False
        return any(
            "s" in k.caps and k.validity not in _UNUSABLE_VALIDITY and k.token not in ("", "#")
            for k in block
        )

    good = [b for b in blocks if usable(b)]
    if not good:
        states = ", ".join(f"{b[0].fingerprint} (validity {b[0].validity or '?'})" for b in blocks)
        raise VaultMeshError(
            "VM-NO-SIGNING-KEY",
            f"{spec!r} names no usable signing key: expired, revoked, without signing capability, or the "
            f"secret part is not on this machine: {states}",
            hint,
        )
    if len(good) > 1:
        raise VaultMeshError(
            "VM-NO-SIGNING-KEY",
            f"{spec!r} matches {len(good)} usable secret keys: " + ", ".join(b[0].fingerprint for b in good),
            "set vaultmesh.signingKey to the full 40-hex fingerprint of the key to use",
        )
    fpr = good[0][0].fingerprint
    exported = _run(
        [*_gpg_base(), "--armor", "--export", "--export-options", "export-minimal", "--", fpr],
        timeout=timeout,
    )
    public = exported.stdout.decode("ascii", "replace")
    if exported.returncode != 0 or "BEGIN PGP PUBLIC KEY BLOCK" not in public:
        raise VaultMeshError(
            "VM-NO-SIGNING-KEY", f"cannot export the public key {fpr}: {_summarise(exported.stderr)}", hint
        )
    return SigningKey("openpgp", spec, fpr, public)


def openpgp_public_key(spec: str, timeout: float = 30.0) -> tuple[str, str]:
    """(primary fingerprint, armoured minimal export) of a key to pin: a key id/fingerprint in the user's
    keyring (a subkey's fingerprint maps to its primary) or a file holding one armoured public key.

    Only the pinned export is trusted afterwards; the keyring is merely where the user keeps bob's key."""
    hint = "import the key first (gpg --import bob.asc), or pass the exported key file"
    listing_args = ["--with-colons", "--fixed-list-mode", "--with-fingerprint", "--with-subkey-fingerprint"]
    if os.path.isfile(spec):
        try:
            with open(spec, encoding="ascii") as fh:
                material = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise VaultMeshError("VM-FILE-UNREADABLE", f"cannot read OpenPGP key file {spec}: {exc}",
                                 "export it with `gpg --armor --export FPR > key.asc`") from exc
        res = _run([*_gpg_base(), *listing_args, "--show-keys", spec], timeout=timeout)
        blocks = [b for b in _parse_colons(res.stdout.decode("utf-8", "replace")) if b[0].kind == "pub"]
        if res.returncode != 0 or len(blocks) != 1 or "BEGIN PGP PUBLIC KEY BLOCK" not in material:
            raise VaultMeshError("VM-FILE-UNREADABLE",
                                 f"{spec} must hold exactly one armoured OpenPGP public key, found {len(blocks)}",
                                 "export it with `gpg --armor --export --export-options export-minimal FPR`")
        public = material.strip() + "\n"
    else:
        res = _run([*_gpg_base(), *listing_args, "--list-keys", "--", spec], timeout=timeout)
        blocks = _parse_colons(res.stdout.decode("utf-8", "replace")) if res.returncode == 0 else []
        if len(blocks) != 1:
            found = "no key" if not blocks else f"{len(blocks)} keys"
            raise VaultMeshError("VM-USAGE", f"{spec!r} matches {found} in your OpenPGP keyring",
                                 hint if not blocks else "pass the full 40-hex fingerprint")
        public = ""
    primary = blocks[0][0]
    if primary.validity in _UNUSABLE_VALIDITY:
        raise VaultMeshError("VM-USAGE", f"OpenPGP key {primary.fingerprint} is revoked, expired or invalid "
                             f"(validity {primary.validity!r})", "pin a key that can sign today")
    if not public:
        exported = _run([*_gpg_base(), "--armor", "--export", "--export-options", "export-minimal", "--",
                         primary.fingerprint], timeout=timeout)
        public = exported.stdout.decode("ascii", "replace")
        if exported.returncode != 0 or "BEGIN PGP PUBLIC KEY BLOCK" not in public:
            raise VaultMeshError("VM-USAGE", f"cannot export {primary.fingerprint}: {_summarise(exported.stderr)}",
                                 hint)
    return primary.fingerprint, public


def _ssh_literal(spec: str) -> str | None:
    """The public key of a "key::<public key>" setting (or git's deprecated bare "ssh-..."), else None."""
    if spec.startswith("key::"):
        return spec[5:].strip()
    if spec.startswith("ssh-") and len(spec.split()) >= 2:
        return spec
    return None


def _resolve_ssh(key: str, timeout: float) -> SigningKey:
    hint = (
        "set vaultmesh.signingKey (or user.signingkey) to your SSH private key file, to its .pub with "
        "the key loaded in ssh-agent, or to 'key::<public key>' for a key held by ssh-agent"
    )
    spec = key.strip()
    literal = _ssh_literal(spec)
    if literal is not None:
        line = literal
    else:
        path = os.path.expanduser(spec)
        candidates = [path] if path.endswith(".pub") else [path + ".pub"]
        pub = next((c for c in candidates if os.path.isfile(c)), None)
        if pub is not None:
            try:
                with open(pub, encoding="utf-8") as fh:
                    line = fh.read().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise VaultMeshError(
                    "VM-NO-SIGNING-KEY", f"cannot read SSH public key {pub}: {exc}", hint
                ) from exc
        elif spec and os.path.isfile(path):
            # No .pub beside it: derive it, with an empty passphrase so that an encrypted key fails at
            # once instead of prompting.
            res = _run(["ssh-keygen", "-y", "-P", "", "-f", path], timeout=timeout)
            if res.returncode != 0:
                raise VaultMeshError(
                    "VM-NO-SIGNING-KEY",
                    f"cannot read the public half of {path}: {_summarise(res.stderr)}",
                    f"create it with `ssh-keygen -y -f {path} > {path}.pub`",
                )
            line = res.stdout.decode("utf-8", "replace").strip()
        else:
            raise VaultMeshError("VM-NO-SIGNING-KEY", f"SSH signing key {spec!r} does not exist", hint)
    try:
        fpr = ssh_fingerprint(line)
    except ValueError as exc:
        raise VaultMeshError("VM-NO-SIGNING-KEY", f"SSH signing key {spec!r}: {exc}", hint) from exc
    return SigningKey("ssh", spec, fpr, line.splitlines()[0].strip())


def sign(key: SigningKey, data: bytes, *, armor: bool = False, timeout: float | None = None) -> str:
    """Detached signature over `data`: base64 for an entry's `sig`, armour (armor=True) for checkpoint.sig.
    `timeout` defaults to the key's (the vaultmesh.gpgTimeout it was resolved with)."""
    timeout = key.timeout if timeout is None else timeout
    with timings.step("sign"):
        return _sign(key, data, armor, timeout)


def _sign(key: SigningKey, data: bytes, armor: bool, timeout: float) -> str:
    if key.format == "openpgp":
        raw = _sign_openpgp(key, data, armor, timeout)
        return raw.decode("ascii") if armor else base64.b64encode(raw).decode("ascii")
    if key.format == "ssh":
        text = _sign_ssh(key, data, timeout)
        return text if armor else base64.b64encode(text.encode("ascii")).decode("ascii")
    raise VaultMeshError(
        "VM-CONFIG-INVALID", f"unknown signing format {key.format!r}", "use 'openpgp' or 'ssh'"
    )


def _sign_openpgp(key: SigningKey, data: bytes, armor: bool, timeout: float) -> bytes:
    # Sign with the resolved primary fingerprint (gpg then picks the signing subkey), so an ambiguous user id
    # cannot select another key than the one resolved; an explicit "SUBKEY!" is honoured as given.
    signer = key.key.strip() if key.key.strip().endswith("!") else key.fingerprint
    argv = [
        *_gpg_base(), "--status-fd", "2", "--local-user", signer, "--detach-sign",
        # Override gpg.conf settings that would make a signature we later refuse or cannot attribute:
        "--armor" if armor else "--no-armor", "--no-textmode", "--no-throw-keyids",
        "--default-sig-expire", "0", "--output", "-",
    ]
    res = _run(argv, input=data, timeout=timeout)
    created = any(s[0] == "SIG_CREATED" for s in _status_lines(res.stderr))
    if res.returncode != 0 or not res.stdout or not created:
        raise VaultMeshError(
            "VM-SIGN-FAILED",
            f"gpg could not sign with {signer}: {_summarise(res.stderr)}",
            "check `gpg --list-secret-keys`, that the key is not expired, and that gpg-agent can ask for its "
            "passphrase (GPG_TTY set, or a graphical pinentry)",
        )
    if armor and not res.stdout.lstrip().startswith(b"-----BEGIN PGP SIGNATURE-----"):
        raise VaultMeshError("VM-SIGN-FAILED", "gpg did not return an armoured signature",
                             "check that `echo x | gpg --armor --detach-sign` prints one (options in gpg.conf "
                             "may interfere)")
    return res.stdout


def _sign_ssh(key: SigningKey, data: bytes, timeout: float) -> str:
    spec = key.key.strip()
    literal = _ssh_literal(spec)
    # Sign a file, as git does: ssh-keygen may read a passphrase from stdin when no tty exists, so stdin must
    # not carry the data.
    workdir = _short_tempdir("vms-")
    try:
        datafile = os.path.join(workdir, "data")
        with open(datafile, "wb") as fh:
            fh.write(data)
        argv = ["ssh-keygen", "-Y", "sign", "-n", NAMESPACE]
        if literal is not None:
            keyfile = os.path.join(workdir, "key.pub")
            with open(keyfile, "w", encoding="utf-8") as fh:
                fh.write(literal + "\n")
            argv += ["-U", "-f", keyfile]
        else:
            argv += ["-f", os.path.expanduser(spec)]
        res = _run([*argv, datafile], timeout=timeout)
        text = ""
        if res.returncode == 0 and os.path.isfile(datafile + ".sig"):
            with open(datafile + ".sig", encoding="ascii", errors="replace") as fh:
                text = fh.read()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not text:
        raise VaultMeshError(
            "VM-SIGN-FAILED",
            f"ssh-keygen could not sign with {spec}: {_summarise(res.stderr)}",
            "check the key path, its passphrase, or that ssh-agent holds the key (`ssh-add -l`)",
        )
    try:
        made = _parse_sshsig(text)
    except _Malformed as exc:
        raise VaultMeshError("VM-SIGN-FAILED", f"ssh-keygen returned an unreadable signature: {exc}",
                             "use OpenSSH 8.1 or later (`ssh -V`); `ssh-keygen -Y sign` must write an SSHSIG") from exc
    made_fpr = _ssh_blob_fingerprint(made.public_key)
    if made_fpr != key.fingerprint:
        raise VaultMeshError(
            "VM-SIGN-FAILED",
            f"ssh-keygen signed with {made_fpr}, not with the configured key {key.fingerprint}",
            f"the public key file beside {spec} does not belong to that private key",
        )
    return text


# --------------------------------------------------------------------------------------------------
# verifying


@dataclass(frozen=True)
class _PgpKeyInfo:
    primary: str
    expires: int | None
    revoked: bool


class _Resources:
    """Temp dir (and any gpg state in it) owned by one Verifier; released by close() or at collection."""

    def __init__(self) -> None:
        self.dir: str | None = None
        self.used_gpg = False

    def ensure_dir(self) -> str:
        if self.dir is None:
            self.dir = _short_tempdir("vmv-")
        return self.dir

    def cleanup(self) -> None:
        if self.dir is None:
            return
        if self.used_gpg:  # gpg ran with --no-autostart, so no agent should exist; make sure of it anyway
            try:
                subprocess.run(
                    ["gpgconf", "--homedir", self.dir, "--kill", "all"],
                    capture_output=True, timeout=10, check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


class Verifier:
    """Verifies signatures against a fixed set of pinned keys only; reuse one instance for many signatures.

    Trust material is built once per format, on first use: a throwaway OpenPGP keyring holding only the
    pinned keys (checked by `gpgv`, which never looks at the user's keyring) and an allowed-signers file whose
    principals are the pinned SSH fingerprints. Each verify then costs at most one gpgv or ssh-keygen process.
    """

    def __init__(self, keys: Sequence[PinnedKey], *, timeout: float = 30.0) -> None:
        self.timeout = timeout
        # Declared OpenPGP fingerprints, and every piece of key material given. The same key may be pinned
        # several times (successive policy entries): all its material is imported and merged by gpg, so a
        # revocation or a new expiry carried by any copy counts.
        self._pgp_pins: set[str] = set()
        self._pgp_material: list[str] = []
        self._ssh_pins: dict[str, str] = {}  # fingerprint -> "type base64"
        # Pinned keys whose material does not match their declared fingerprint; they verify nothing.
        self.unusable: list[tuple[str, str]] = []
        for pin in keys:
            if pin.format == "openpgp":
                self._pgp_pins.add(_norm_pgp_fpr(pin.fingerprint))
                self._pgp_material.append(pin.public_key.strip())
            elif pin.format == "ssh":
                try:
                    kind, blob = _parse_ssh_public_key(pin.public_key)
                except ValueError as exc:
                    self.unusable.append((pin.fingerprint, str(exc)))
                    continue
                if _ssh_blob_fingerprint(blob) != pin.fingerprint.strip():
                    self.unusable.append((pin.fingerprint, "the public key has another fingerprint"))
                    continue
                self._ssh_pins[pin.fingerprint.strip()] = f"{kind} {base64.b64encode(blob).decode('ascii')}"
            else:
                self.unusable.append((pin.fingerprint, f"unknown format {pin.format!r}"))
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.cleanup)
        self._lock = threading.Lock()
        self._keyring: str | None = None
        self._pgp_keys: dict[str, _PgpKeyInfo] = {}  # primary and subkey fingerprints -> info
        self._allowed: str | None = None
        self._closed = False
        self._memo: dict[tuple[str, str, bytes, bool, datetime | None], SigCheck] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Remove the temp trust material (and stop any gpg process state left in it)."""
        with self._lock:
            self._closed = True
            self._finalizer()
            self._keyring = self._allowed = None

    def __enter__(self) -> Verifier:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- trust material ----------------------------------------------------------------------------

    def _openpgp_keyring(self) -> str:
        with self._lock:
            if self._keyring is not None:
                return self._keyring
            home = self._res.ensure_dir()
            keyring = os.path.join(home, "pinned.gpg")
            # An existing empty file makes gpg write a plain keyring, not a keybox (gpgv tries to lock those).
            open(keyring, "wb").close()
            if self._pgp_pins:
                source = os.path.join(home, "pinned.asc")
                with open(source, "w", encoding="utf-8") as fh:
                    fh.write("\n".join(self._pgp_material) + "\n")
                self._res.used_gpg = True
                gpg = ["gpg", "--homedir", home, "--no-options", "--no-autostart", "--batch", "--no-tty",
                       "--no-default-keyring", "--keyring", keyring]
                # A bad block is skipped by gpg (its keys are then reported in `unusable`), never fatal here.
                imported = _run([*gpg, "--import", source], timeout=self.timeout, hint=_LOCAL_HINT)
                listing = _run(
                    [*gpg, "--with-colons", "--fixed-list-mode", "--with-fingerprint",
                     "--with-subkey-fingerprint", "--list-keys"],
                    timeout=self.timeout, hint=_LOCAL_HINT,
                )
                for block in _parse_colons(listing.stdout.decode("utf-8", "replace")):
                    primary = block[0].fingerprint
                    for k in block:
                        self._pgp_keys[k.fingerprint] = _PgpKeyInfo(primary, k.expires, k.validity == "r")
                for fpr in sorted(self._pgp_pins):
                    if self._pgp_keys.get(fpr, _PgpKeyInfo("", None, False)).primary != fpr:
                        why = f"the pinned material lacks this key (gpg: {_summarise(imported.stderr, 2)})"
                        self.unusable.append((fpr, why))
            self._keyring = keyring
            return keyring

    def _ssh_allowed_signers(self) -> str:
        with self._lock:
            if self._allowed is None:
                path = os.path.join(self._res.ensure_dir(), "allowed_signers")
                with open(path, "w", encoding="ascii") as fh:
                    for fpr, key in self._ssh_pins.items():
                        fh.write(f'{fpr} namespaces="{NAMESPACE}" {key}\n')
                self._allowed = path
            return self._allowed

    def _sig_file(self, content: bytes) -> str:
        fd, path = tempfile.mkstemp(dir=self._res.ensure_dir(), suffix=".sig")
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        return path

    # -- verification ------------------------------------------------------------------------------

    def verify(
        self, fmt: str, sig: str, data: bytes, *, armored: bool = False, at: datetime | None = None
    ) -> SigCheck:
        """Check one detached signature over `data`; returns a status, raises only for environment failures.

        `sig` is an entry's base64 `sig` (armored=False) or checkpoint.sig's armoured text (armored=True).
        `at` is the time the caller holds the signature to (the entry's `recorded_at`): an OpenPGP key that
        had expired by then, or by the signature's own creation time, gives "expired". Expiry is judged at
        those times, not now: a key that expires later does not invalidate what it signed while valid.
        """
        if self._closed:
            raise ValueError("this Verifier is closed")
        memo = (fmt, sig, data, armored, at)  # a batch signature covers many entries: verify it once
        done = self._memo.get(memo)
        if done is not None:
            return done
        with timings.step("signatures"):
            res = self._verify(fmt, sig, data, armored, at)
        self._memo[memo] = res
        return res

    def _verify(self, fmt: str, sig: str, data: bytes, armored: bool, at: datetime | None) -> SigCheck:
        if fmt == "openpgp":
            res = self._verify_openpgp(sig, data, armored, at)
        elif fmt == "ssh":
            res = self._verify_ssh(sig, data, armored)
        else:
            res = SigCheck("malformed", None, f"unknown signature format {fmt!r} (expected 'openpgp' or 'ssh')")
        return res

    def _verify_openpgp(self, sig: str, data: bytes, armored: bool, at: datetime | None) -> SigCheck:
        try:
            if not sig.strip():
                raise _Malformed("empty signature")
            raw = _dearmor(sig, _PGP_SIG_LABEL) if armored else _b64(sig)
            tags = _pgp_packet_tags(raw)
            if tags != [2]:
                raise _Malformed(f"expected exactly one OpenPGP signature packet, found packet tags {tags}")
        except _Malformed as exc:
            return SigCheck("malformed", None, f"not an OpenPGP detached signature: {exc}")
        keyring = self._openpgp_keyring()
        sigfile = self._sig_file(raw)
        try:
            home = os.path.dirname(keyring)  # gpgv's default keyring (trustedkeys) there does not exist
            res = _run(
                ["gpgv", "--homedir", home, "--status-fd", "1", "--keyring", keyring, sigfile, "-"],
                input=data, timeout=self.timeout, hint=_LOCAL_HINT,
            )
        finally:
            os.unlink(sigfile)
        return self._judge_gpgv(res, at)

    def _judge_gpgv(self, res: subprocess.CompletedProcess[bytes], at: datetime | None) -> SigCheck:
        status = _status_lines(res.stdout)
        words = {s[0] for s in status}
        if sum(1 for s in status if s[0] == "NEWSIG") > 1:
            return SigCheck("malformed", None, "more than one signature in one `sig`")
        by = {s[0]: s[1:] for s in status}
        if "ERRSIG" in by:
            args = by["ERRSIG"]
            keyid = args[0] if args else "?"
            rc = args[5] if len(args) > 5 else ""
            issuer = args[6] if len(args) > 6 and args[6] != "-" else None
            if rc == "9":
                named = f"issuer {issuer}" if issuer else f"issuer key id {keyid}"
                return SigCheck("unpinned", issuer, f"signed by a key not pinned in the policy ({named})")
            if rc == "4":
                return SigCheck("malformed", issuer, f"unsupported signature algorithm (key id {keyid})")
            return SigCheck("invalid", issuer, f"gpgv cannot check the signature: {_summarise(res.stderr)}")
        if "BADSIG" in by:
            keyid = (by["BADSIG"] or ["?"])[0].upper()
            info = next((v for k, v in self._pgp_keys.items() if k.endswith(keyid)), None)
            primary = info.primary if info else None
            return SigCheck("invalid", primary, f"BAD signature: it does not match the data (key id {keyid})")
        if "VALIDSIG" not in by:
            return SigCheck("malformed", None, f"gpgv found no signature: {_summarise(res.stderr)}")
        v = by["VALIDSIG"]
        if len(v) < 10:
            return SigCheck("malformed", None, "gpgv reported an incomplete VALIDSIG line")
        # VALIDSIG <fpr> <date> <sig-timestamp> <sig-expire> <version> <reserved> <pk-algo> <hash-algo>
        #          <sig-class> <primary-fpr>   (GnuPG doc/DETAILS)
        signing_fpr, primary = v[0].upper(), v[9].upper()
        sig_time = _parse_gpg_time(v[2]) or 0
        when = _iso(sig_time)
        if v[8] != "00":
            return SigCheck(
                "malformed", primary, f"signature class 0x{v[8]} is not a binary-document signature (0x00)"
            )
        if primary not in self._pgp_pins or primary not in self._pgp_keys:
            return SigCheck("unpinned", primary, f"good signature by {primary}, not pinned in the policy")
        if v[7] in _WEAK_PGP_DIGESTS:
            return SigCheck("invalid", primary, f"signature uses the weak digest {_WEAK_PGP_DIGESTS[v[7]]}")
        signer = f"key {primary}" if signing_fpr == primary else f"subkey {signing_fpr} of key {primary}"
        keys: list[tuple[str, _PgpKeyInfo | None]] = [(f"key {primary}", self._pgp_keys[primary])]
        if signing_fpr != primary:
            keys.append((f"subkey {signing_fpr}", self._pgp_keys.get(signing_fpr)))
        if "REVKEYSIG" in words or any(info is not None and info.revoked for _, info in keys):
            return SigCheck("revoked", primary, f"signed {when} by {signer}, which is revoked")
        if "EXPSIG" in words:
            return SigCheck("expired", primary, f"the signature by {signer} made {when} has itself expired")
        at_ts = None
        if at is not None:
            at_ts = int((at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)).timestamp())
        for label, info in keys:
            if info is None or info.expires is None:
                continue
            until = _iso(info.expires)
            if info.expires <= sig_time:
                return SigCheck("expired", primary, f"{label} expired {until}, before the signature ({when})")
            if at_ts is not None and info.expires <= at_ts:
                return SigCheck("expired", primary, f"{label} expired {until}, before {_iso(at_ts)}")
        if "EXPKEYSIG" in words and all(info is None or info.expires is None for _, info in keys):
            # gpgv says expired but the listing gave no expiry date to judge it by: fail closed.
            return SigCheck("expired", primary, f"gpgv reports {signer} as expired")
        if "GOODSIG" not in words and "EXPKEYSIG" not in words:
            return SigCheck("invalid", primary, f"gpgv reports no good signature: {_summarise(res.stderr)}")
        return SigCheck("valid", primary, f"good signature by {signer}, made {when}")

    def _verify_ssh(self, sig: str, data: bytes, armored: bool) -> SigCheck:
        try:
            if not sig.strip():
                raise _Malformed("empty signature")
            if armored:
                text = sig
            else:
                try:
                    text = _b64(sig).decode("ascii")
                except UnicodeDecodeError as exc:
                    raise _Malformed("the decoded signature is not SSHSIG armour text") from exc
            parsed = _parse_sshsig(text)
        except _Malformed as exc:
            return SigCheck("malformed", None, f"not an SSH signature: {exc}")
        fpr = _ssh_blob_fingerprint(parsed.public_key)
        if parsed.namespace != NAMESPACE:
            # The namespace is part of the signed message (PROTOCOL.sshsig): a signature made for another
            # namespace (e.g. "git") is well-formed but is not a signature over this vaultmesh message.
            return SigCheck(
                "invalid", fpr, f"SSH signature is for namespace {parsed.namespace!r}, not {NAMESPACE!r}"
            )
        if fpr not in self._ssh_pins:
            return SigCheck("unpinned", fpr, f"signed by SSH key {fpr}, which is not pinned in the policy")
        allowed = self._ssh_allowed_signers()
        sigfile = self._sig_file(text.encode("ascii"))
        try:
            res = _run(
                ["ssh-keygen", "-Y", "verify", "-f", allowed, "-I", fpr, "-n", NAMESPACE, "-s", sigfile],
                input=data, timeout=self.timeout, hint=_LOCAL_HINT,
            )
        finally:
            os.unlink(sigfile)
        if res.returncode == 0:
            return SigCheck("valid", fpr, f"good SSH signature by {fpr} ({parsed.hash_algorithm})")
        return SigCheck("invalid", fpr, f"SSH signature by {fpr} does not verify: {_summarise(res.stderr)}")
