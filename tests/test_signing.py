"""signing.py against the real tools: gpg + gpg-agent to sign, gpgv and ssh-keygen -Y to verify; no mocks.

The point under test is pinning: a Verifier trusts only the keys it is given, never the user's keyring
or ~/.ssh/allowed_signers (the old tool's bug).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.signing import (
    STATUS_CODES,
    PinnedKey,
    SigningKey,
    Verifier,
    resolve_signing_key,
    sign,
    ssh_fingerprint,
)

from conftest import GpgKey, gen_gpg_key, kill_agent, throwaway_gpg_home

DATA = b'{"body":{"log":"00ff","type":"release"},"v":1}'
T0 = datetime(2020, 1, 1, tzinfo=timezone.utc)  # keys "from the past" are made with gpg --faked-system-time


# --- helpers -------------------------------------------------------------------------------------------


def gpg(home: str, *args: str, input: bytes | None = None) -> bytes:
    res = subprocess.run(
        ["gpg", "--batch", "--no-tty", *args], env=dict(os.environ, GNUPGHOME=home), input=input,
        capture_output=True, check=True,
    )
    return res.stdout


def faked(when: datetime) -> list[str]:
    return ["--faked-system-time", when.strftime("%Y%m%dT%H%M%S")]


def pgp_pin(home: str, fpr: str) -> PinnedKey:
    armored = gpg(home, "--armor", "--export", "--export-options", "export-minimal", fpr).decode()
    return PinnedKey("openpgp", fpr, armored)


def raw_pgp_sig(home: str, fpr: str, data: bytes, *extra: str) -> str:
    """A detached binary signature made by gpg directly (for faked times and odd modes), as entry base64."""
    return base64.b64encode(gpg(home, *extra, "-u", fpr, "--detach-sign", "-o", "-", input=data)).decode()


def ssh_key(directory: Path, name: str, kind: str = "ed25519") -> Path:
    path = directory / name
    extra = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", name, "-f", str(path)], check=True
    )
    return path


def ssh_pin(key: Path) -> PinnedKey:
    line = key.with_suffix(".pub").read_text().strip()
    return PinnedKey("ssh", ssh_fingerprint(line), line)


@pytest.fixture
def other_home() -> Iterator[str]:
    """A second GNUPGHOME (not the user's) for keys the user does not hold."""
    with throwaway_gpg_home() as home:
        yield home


@pytest.fixture
def bob(gnupghome: str) -> GpgKey:
    """A second key in the USER's keyring, ultimately trusted there, but pinned nowhere."""
    return gen_gpg_key(gnupghome, "Bob")


# --- OpenPGP ---------------------------------------------------------------------------------------------


def test_openpgp_round_trip_binary_and_armored(gpg_key: GpgKey) -> None:
    key = resolve_signing_key("openpgp", gpg_key.uid)
    assert key.fingerprint == gpg_key.fingerprint
    assert key.public_key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    entry_sig = sign(key, DATA)
    base64.b64decode(entry_sig, validate=True)  # an entry's `sig` is plain base64 of binary OpenPGP
    checkpoint_sig = sign(key, DATA, armor=True)
    assert checkpoint_sig.startswith("-----BEGIN PGP SIGNATURE-----")
    with Verifier([PinnedKey("openpgp", key.fingerprint, key.public_key)]) as v:
        ok = v.verify("openpgp", entry_sig, DATA)
        assert (ok.status, ok.fingerprint, ok.ok) == ("valid", gpg_key.fingerprint, True)
        assert v.verify("openpgp", checkpoint_sig, DATA, armored=True).status == "valid"
        # armour headers are allowed; a corrupted armour checksum is not
        lines = checkpoint_sig.splitlines()
        with_header = "\n".join([lines[0], "Comment: made by a test", *lines[1:]])
        assert v.verify("openpgp", with_header, DATA, armored=True).status == "valid"
        crc = next(i for i, ln in enumerate(lines) if ln.startswith("="))
        lines[crc] = "=AAAA" if lines[crc] != "=AAAA" else "=BBBB"
        assert v.verify("openpgp", "\n".join(lines), DATA, armored=True).status == "malformed"
        assert STATUS_CODES[ok.status] is None


def test_openpgp_tampered_data_is_invalid(gpg_key: GpgKey) -> None:
    key = resolve_signing_key("openpgp", gpg_key.fingerprint)
    sig = sign(key, DATA)
    with Verifier([pgp_pin(gpg_key.home, gpg_key.fingerprint)]) as v:
        res = v.verify("openpgp", sig, DATA + b" ")
        assert (res.status, res.fingerprint) == ("invalid", gpg_key.fingerprint)
        assert STATUS_CODES[res.status] == "VM-SIG-INVALID"


def test_openpgp_key_in_users_keyring_but_not_pinned_is_unpinned(gpg_key: GpgKey, bob: GpgKey) -> None:
    """The old tool's bug: Bob is in the user's keyring (ultimate trust), but the policy pins only Alice."""
    sig = sign(resolve_signing_key("openpgp", bob.fingerprint), DATA)
    with Verifier([pgp_pin(gpg_key.home, gpg_key.fingerprint)]) as v:
        res = v.verify("openpgp", sig, DATA)
    assert (res.status, res.fingerprint) == ("unpinned", bob.fingerprint)
    assert STATUS_CODES[res.status] == "VM-SIG-UNPINNED"


def test_openpgp_pins_the_declared_fingerprint_not_the_material(gpg_key: GpgKey, bob: GpgKey) -> None:
    """A policy entry whose key material is another key than its fingerprint says trusts neither."""
    bobs_material = pgp_pin(bob.home, bob.fingerprint).public_key
    with Verifier([PinnedKey("openpgp", gpg_key.fingerprint, bobs_material)]) as v:
        by_bob = v.verify("openpgp", sign(resolve_signing_key("openpgp", bob.fingerprint), DATA), DATA)
        by_alice = v.verify("openpgp", sign(resolve_signing_key("openpgp", gpg_key.fingerprint), DATA), DATA)
        assert (by_bob.status, by_bob.fingerprint) == ("unpinned", bob.fingerprint)
        assert by_alice.status == "unpinned"
        assert [fpr for fpr, _ in v.unusable] == [gpg_key.fingerprint]


def test_openpgp_signing_subkey_maps_to_primary(gnupghome: str) -> None:
    carol = gen_gpg_key(gnupghome, "Carol")
    gpg(gnupghome, "--pinentry-mode", "loopback", "--passphrase", "", "--quick-add-key", carol.fingerprint,
        "ed25519", "sign")
    key = resolve_signing_key("openpgp", carol.uid)
    assert key.fingerprint == carol.fingerprint
    with Verifier([PinnedKey("openpgp", key.fingerprint, key.public_key)]) as v:
        res = v.verify("openpgp", sign(key, DATA), DATA)
    assert (res.status, res.fingerprint) == ("valid", carol.fingerprint)
    assert "subkey" in res.detail and carol.fingerprint in res.detail  # gpg picked the newer signing subkey


def test_openpgp_expiry_is_judged_at_signature_time(gnupghome: str) -> None:
    """Key made 2020-01-01 and set to expire ~2020-01-02: a signature made before stays valid today."""
    uid = "Dave <dave@example.org>"
    gpg(gnupghome, *faked(T0), "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", uid,
        "ed25519", "sign", "never")
    fpr = resolve_signing_key("openpgp", uid).fingerprint
    before = raw_pgp_sig(gnupghome, fpr, DATA, *faked(datetime(2020, 1, 1, 1, tzinfo=timezone.utc)))
    after = raw_pgp_sig(gnupghome, fpr, DATA, *faked(datetime(2020, 1, 10, tzinfo=timezone.utc)))
    gpg(gnupghome, *faked(datetime(2020, 1, 1, 2, tzinfo=timezone.utc)), "--quick-set-expire", fpr, "1d")
    with Verifier([pgp_pin(gnupghome, fpr)]) as v:
        ok = v.verify("openpgp", before, DATA)
        assert (ok.status, ok.fingerprint) == ("valid", fpr), ok.detail
        late = v.verify("openpgp", after, DATA)
        assert (late.status, late.fingerprint) == ("expired", fpr), late.detail
        assert STATUS_CODES[late.status] == "VM-SIG-KEY-EXPIRED"
        # the entry claims a time after expiry: expired too (naive datetimes are taken as UTC)
        assert v.verify("openpgp", before, DATA, at=datetime(2020, 1, 5)).status == "expired"
        assert v.verify("openpgp", before, DATA, at=T0.replace(hour=12)).status == "valid"
    # the key is expired now: resolving it for signing fails early
    with pytest.raises(VaultMeshError) as err:
        resolve_signing_key("openpgp", fpr)
    assert err.value.code == "VM-NO-SIGNING-KEY"


def test_openpgp_revoked_key(gnupghome: str) -> None:
    erin = gen_gpg_key(gnupghome, "Erin")
    key = resolve_signing_key("openpgp", erin.fingerprint)
    sig = sign(key, DATA)
    before_revocation = PinnedKey("openpgp", erin.fingerprint, key.public_key)
    rev = Path(gnupghome, "openpgp-revocs.d", f"{erin.fingerprint}.rev").read_text()
    gpg(gnupghome, "--import", input=rev.replace(":-----BEGIN", "-----BEGIN").encode())
    with Verifier([pgp_pin(gnupghome, erin.fingerprint)]) as v:
        res = v.verify("openpgp", sig, DATA)
    assert (res.status, res.fingerprint) == ("revoked", erin.fingerprint)
    assert STATUS_CODES[res.status] == "VM-SIG-KEY-REVOKED"
    # only the pinned material counts: a policy still pinning the unrevoked key does not know ...
    with Verifier([before_revocation]) as v:
        assert v.verify("openpgp", sig, DATA).status == "valid"
    # ... but once any pin of the key (a later policy entry) carries the revocation, it applies
    with Verifier([before_revocation, pgp_pin(gnupghome, erin.fingerprint)]) as v:
        assert v.verify("openpgp", sig, DATA).status == "revoked"


def test_openpgp_not_a_detached_binary_signature(gpg_key: GpgKey) -> None:
    fpr = gpg_key.fingerprint
    home = gpg_key.home
    one = base64.b64decode(raw_pgp_sig(home, fpr, DATA))
    signed_message = gpg(home, "-u", fpr, "--sign", "-o", "-", input=DATA)
    with Verifier([pgp_pin(home, fpr)]) as v:
        two = base64.b64encode(one + one).decode()
        assert v.verify("openpgp", two, DATA).status == "malformed"
        opaque = v.verify("openpgp", base64.b64encode(signed_message).decode(), DATA)
        assert opaque.status == "malformed"
        textmode = v.verify("openpgp", raw_pgp_sig(home, fpr, DATA, "--textmode"), DATA)
        assert (textmode.status, textmode.fingerprint) == ("malformed", fpr)
        assert "0x01" in textmode.detail


def test_openpgp_no_secret_key(gnupghome: str, other_home: str) -> None:
    frank = gen_gpg_key(other_home, "Frank")
    gpg(gnupghome, "--import", input=gpg(other_home, "--export", frank.fingerprint))  # public half only
    for spec in (frank.fingerprint, "nobody@example.org", ""):
        with pytest.raises(VaultMeshError) as err:
            resolve_signing_key("openpgp", spec)
        assert err.value.code == "VM-NO-SIGNING-KEY"
        assert err.value.hint


# --- SSH -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_ssh_round_trip(tmp_path: Path, kind: str) -> None:
    path = ssh_key(tmp_path, f"id_{kind}", kind)
    key = resolve_signing_key("ssh", str(path))
    line = path.with_suffix(".pub").read_text().strip()
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, check=True)
    assert key.fingerprint == ssh_fingerprint(line) == listed.stdout.split()[1]
    assert key.public_key == line
    entry_sig = sign(key, DATA)
    armour = base64.b64decode(entry_sig).decode()
    assert armour.startswith("-----BEGIN SSH SIGNATURE-----")
    with Verifier([PinnedKey("ssh", key.fingerprint, key.public_key)]) as v:
        res = v.verify("ssh", entry_sig, DATA)
        assert (res.status, res.fingerprint) == ("valid", key.fingerprint), res.detail
        assert v.verify("ssh", sign(key, DATA, armor=True), DATA, armored=True).status == "valid"
        bad = v.verify("ssh", entry_sig, DATA + b"x")
        assert (bad.status, bad.fingerprint) == ("invalid", key.fingerprint)


def test_ssh_unpinned_even_if_in_users_allowed_signers(tmp_path: Path) -> None:
    alice, mallory = ssh_key(tmp_path, "alice"), ssh_key(tmp_path, "mallory")
    home = Path(os.environ["HOME"])  # the test's own HOME (conftest): ~/.ssh/allowed_signers must not matter
    (home / ".ssh").mkdir()
    mline = mallory.with_suffix(".pub").read_text().strip()
    (home / ".ssh" / "allowed_signers").write_text(f"* {mline}\n")
    sig = sign(resolve_signing_key("ssh", str(mallory)), DATA)
    with Verifier([ssh_pin(alice)]) as v:
        res = v.verify("ssh", sig, DATA)
    assert (res.status, res.fingerprint) == ("unpinned", ssh_fingerprint(mline))


def test_ssh_wrong_namespace_is_invalid(tmp_path: Path) -> None:
    """A "git" signature is well-formed (so not malformed) but the namespace is part of the signed message,
    so it is not a signature over this vaultmesh message: invalid, the same as a signature over other data."""
    path = ssh_key(tmp_path, "id")
    (tmp_path / "data").write_bytes(DATA)
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(path), "-n", "git", str(tmp_path / "data")],
                   check=True, capture_output=True)
    sig = base64.b64encode((tmp_path / "data.sig").read_bytes()).decode()
    with Verifier([ssh_pin(path)]) as v:
        res = v.verify("ssh", sig, DATA)
    assert res.status == "invalid" and "'git'" in res.detail


def test_ssh_signing_through_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As git does: the config names the .pub (or a key:: literal) and ssh-agent holds the private key."""
    path = ssh_key(tmp_path, "agentkey")
    pub_only = tmp_path / "elsewhere"
    pub_only.mkdir()
    shutil.copy(path.with_suffix(".pub"), pub_only / "agentkey.pub")
    sockdir = tempfile.mkdtemp(prefix="vma", dir="/tmp")  # unix socket paths must stay short
    sock = os.path.join(sockdir, "agent")
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.02)
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        subprocess.run(["ssh-add", str(path)], check=True, capture_output=True)
        line = path.with_suffix(".pub").read_text().strip()
        pinned = [ssh_pin(path)]
        with Verifier(pinned) as v:
            for spec in (str(pub_only / "agentkey.pub"), f"key::{line}"):
                key = resolve_signing_key("ssh", spec)
                assert v.verify("ssh", sign(key, DATA), DATA).status == "valid"
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        shutil.rmtree(sockdir, ignore_errors=True)


def test_ssh_no_signing_key(tmp_path: Path) -> None:
    for spec in (str(tmp_path / "missing"), "key::ssh-ed25519 notbase64!", ""):
        with pytest.raises(VaultMeshError) as err:
            resolve_signing_key("ssh", spec)
        assert err.value.code == "VM-NO-SIGNING-KEY"
    # a .pub that does not belong to the private key beside it: caught when signing, before anything is stored
    path, other = ssh_key(tmp_path, "id"), ssh_key(tmp_path, "other")
    shutil.copy(other.with_suffix(".pub"), path.with_suffix(".pub"))
    with pytest.raises(VaultMeshError) as err:
        sign(resolve_signing_key("ssh", str(path)), DATA)
    assert err.value.code == "VM-SIGN-FAILED"


# --- malformed input, both formats ---------------------------------------------------------------------


@pytest.fixture
def both(gpg_key: GpgKey, tmp_path: Path) -> Iterator[tuple[Verifier, dict[str, str]]]:
    """A Verifier pinning one key of each format, and a good entry sig of each."""
    pgp = resolve_signing_key("openpgp", gpg_key.fingerprint)
    ssh = resolve_signing_key("ssh", str(ssh_key(tmp_path, "id")))
    keys = [PinnedKey(k.format, k.fingerprint, k.public_key) for k in (pgp, ssh)]
    with Verifier(keys) as v:
        yield v, {"openpgp": sign(pgp, DATA), "ssh": sign(ssh, DATA)}


@pytest.mark.parametrize("fmt", ["openpgp", "ssh"])
def test_malformed_signatures(both: tuple[Verifier, dict[str, str]], fmt: str) -> None:
    v, good = both
    raw = base64.b64decode(good[fmt])
    cases = {
        "empty": "",
        "not base64": "%%% not base64 %%%",
        "garbage": base64.b64encode(b"garbage, not a signature").decode(),
        "truncated": base64.b64encode(raw[: len(raw) // 2]).decode(),
        "cut short": good[fmt][:20],
    }
    for name, sig in cases.items():
        res = v.verify(fmt, sig, DATA)
        assert res.status == "malformed", (name, res)
        assert STATUS_CODES[res.status] == "VM-SIG-MALFORMED"
    assert v.verify(fmt, "-----BEGIN nonsense\n", DATA, armored=True).status == "malformed"
    other = "ssh" if fmt == "openpgp" else "openpgp"
    assert v.verify(other, good[fmt], DATA).status == "malformed"  # the wrong format for the bytes
    assert v.verify(fmt, good[fmt], DATA).status == "valid"


def test_unknown_format_is_malformed(both: tuple[Verifier, dict[str, str]]) -> None:
    v, good = both
    assert v.verify("x509", good["openpgp"], DATA).status == "malformed"


def test_close_removes_trust_material(both: tuple[Verifier, dict[str, str]]) -> None:
    v, good = both
    assert v.verify("openpgp", good["openpgp"], DATA).ok and v.verify("ssh", good["ssh"], DATA).ok
    tmp = v._res.dir
    assert tmp is not None and os.path.isdir(tmp)
    v.close()
    assert not os.path.exists(tmp)
    with pytest.raises(ValueError):
        v.verify("ssh", good["ssh"], DATA)


# --- environment failures ---------------------------------------------------------------------------------


def test_missing_tools(both: tuple[Verifier, dict[str, str]], gpg_key: GpgKey, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    v, good = both
    pgp = resolve_signing_key("openpgp", gpg_key.fingerprint)
    ssh = resolve_signing_key("ssh", str(tmp_path / "id"))
    fresh = Verifier([PinnedKey(pgp.format, pgp.fingerprint, pgp.public_key)])
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    calls: list[Callable[[], object]] = [
        lambda: resolve_signing_key("openpgp", gpg_key.fingerprint),
        lambda: sign(pgp, DATA),
        lambda: sign(ssh, DATA),
        lambda: v.verify("openpgp", good["openpgp"], DATA),  # gpgv
        lambda: v.verify("ssh", good["ssh"], DATA),  # ssh-keygen
        lambda: fresh.verify("openpgp", good["openpgp"], DATA),  # gpg, to build the pinned keyring
    ]
    # PATH is restored before the fixtures' teardown, which needs gpgconf to stop the agents
    with monkeypatch.context() as m:
        m.setenv("PATH", str(empty))
        for call in calls:
            with pytest.raises(VaultMeshError) as err:
                call()
            assert err.value.code == "VM-TOOL-MISSING"
            assert err.value.hint
    fresh.close()


def test_hung_agent_times_out(other_home: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real gpg-agent whose pinentry never answers: sign must give up, not hang `record` forever."""
    home = other_home
    uid = "Grace <grace@example.org>"
    conf = Path(home, "gpg-agent.conf")
    conf.write_text("s2k-count 65536\n")  # cheap passphrase protection: key generation in ms, not seconds
    gpg(home, "--pinentry-mode", "loopback", "--passphrase", "s3cret", "--quick-gen-key", uid, "ed25519",
        "sign")
    kill_agent(home)  # forget the cached passphrase
    pidfile = Path(home, "pinentry.pid")
    script = Path(home, "hang-pinentry")
    script.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 60\n")
    script.chmod(0o755)
    conf.write_text(f"s2k-count 65536\npinentry-program {script}\n")
    monkeypatch.setenv("GNUPGHOME", home)
    key = resolve_signing_key("openpgp", uid)
    started = time.monotonic()
    try:
        with pytest.raises(VaultMeshError) as err:
            sign(key, DATA, timeout=1.0)
        assert err.value.code == "VM-TOOL-TIMEOUT"
        assert time.monotonic() - started < 6
    finally:
        kill_agent(home)
        if pidfile.exists():  # the hanging pinentry this test caused, by its pid
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


def test_signing_key_is_plain_data() -> None:
    key = SigningKey("ssh", "~/.ssh/id", "SHA256:x", "ssh-ed25519 AAAA")
    with pytest.raises(AttributeError):
        key.fingerprint = "other"  # type: ignore[misc]
