"""`tsa`: put an RFC 3161 TSA into the trust policy (`tsa add`), list the policy's TSAs (`tsa list`), or run the
built-in loopback TSA (`tsa serve`).

`tsa add` appends a policy entry: the full snapshot of the policy in force plus the new TSA (name, CA
certificate, optional SPKI pin) and the number of tokens entries need from now on. Trust lives there; the URL
is operational and goes to git config (vaultmesh.tsa.<name>.url). Before signing anything it asks the TSA for a
token and verifies it against the CA and pin given (--offline skips that), so a wrong URL or CA is caught
while it is still cheap.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from ..config import signing_key
from ..entry import now_rfc3339, sign_body
from ..errors import VaultMeshError
from ..git import Repo
from ..policy import WILDCARD, Policy, PolicyTsa, judge_change, may_sign, signing_rule
from ..ui import print_json, report


def run(args: argparse.Namespace) -> int:
    cmd = getattr(args, "tsa_command", None)
    if cmd == "serve":
        return _serve(args)
    if cmd == "add":
        return _add(args)
    if cmd == "list":
        return _list(args)
    raise VaultMeshError("VM-USAGE", "no tsa subcommand given", "git vaultmesh tsa add | list | serve")


# --- add ---------------------------------------------------------------------------------------------------

def read_ca(path: str) -> str:
    """The PEM of exactly one certificate from a PEM or DER file."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise VaultMeshError("VM-FILE-UNREADABLE", f"cannot read CA certificate {path}: {exc.strerror or exc}",
                             "pass the PEM file of the CA that issued the TSA's signing certificate") from None
    try:
        certs = (x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data
                 else [x509.load_der_x509_certificate(data)])
    except ValueError as exc:
        raise VaultMeshError("VM-FILE-UNREADABLE", f"{path} is not a PEM or DER X.509 certificate ({exc})",
                             "pass the CA certificate the TSA operator publishes (PEM)") from None
    if len(certs) != 1:
        raise VaultMeshError("VM-FILE-UNREADABLE", f"{path} holds {len(certs)} certificates; exactly one (the CA "
                             "the TSA signer chains to) was required",
                             "keep only the CA certificate; intermediates travel inside the tokens")
    return certs[0].public_bytes(Encoding.PEM).decode("ascii")


def _check_url(url: str) -> None:
    from ..rfc3161.client import url_problem

    problem = url_problem(url)
    if problem is not None:
        raise VaultMeshError("VM-USAGE", f"--url {url!r} {problem}",
                             "give the URL the TSA operator publishes for RFC 3161 requests")


def _check_pin(pin: str | None) -> str | None:
    if pin is None:
        return None
    try:
        raw = base64.b64decode(pin.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise VaultMeshError("VM-USAGE", f"--pin-spki {pin!r} is not base64 of a SHA-256 digest",
                             "the pin is base64(SHA-256(DER SubjectPublicKeyInfo)) of the TSA signer certificate, "
                             "as `tsa add` prints it after a successful probe")
    return base64.b64encode(raw).decode("ascii")


def probe(name: str, url: str, ca_pem: str, pin: str | None, timeout: float) -> Any:
    """One real token from the TSA over a throwaway imprint, verified against the CA and pin given."""
    from ..rfc3161.tsa import TsaTrust, request_token, verify_token

    data = b"git-vaultmesh tsa add probe " + os.urandom(16)
    trust = TsaTrust(name, ca_pem, pin)
    try:
        tsr, nonce = request_token(url, data, timeout)
        return verify_token(tsr, data, trust, nonce)
    except VaultMeshError as exc:
        raise VaultMeshError(exc.code, f"probing TSA {name} at {url}: {exc.cause}",
                             f"{exc.hint or 'check the URL and the CA certificate'}; "
                             "or pass --offline to add it without asking it for a token now") from None


def _add(args: argparse.Namespace) -> int:
    from ..rfc3161.timestamping import settings_for
    from .policy import append_change, load_state, write_proposal

    repo = Repo.discover()
    name: str = args.name
    _check_url(args.url)
    pin = _check_pin(args.pin_spki)
    ca_pem = read_ca(args.ca_cert)
    st = load_state(repo)
    try:
        cur = st.current.policy
        if cur.tsa(name) is not None:
            raise VaultMeshError("VM-USAGE", f"TSA {name} is already in the policy in force",
                                 f"pick another name; to change only its URL: git config vaultmesh.tsa.{name}.url URL")
        require = args.require if args.require is not None else max(cur.tokens_required.get(WILDCARD, 0), 1)
        from ..config import Settings

        settings = Settings(repo)
        for t in cur.tsas:  # k-of-n counts distinct authorities: one URL or one signing key is one TSA
            if (settings.tsa_url(t.name) or "").rstrip("/") == args.url.rstrip("/"):
                raise VaultMeshError("VM-TSA-DUPLICATE", f"TSA {t.name} of the policy already uses {args.url}",
                                     "a second name for one TSA would count its tokens twice: add a distinct TSA")
        info = None
        if not args.offline:
            info = probe(name, args.url, ca_pem, pin, settings_for(repo)[0])
        for t in cur.tsas:
            if t.spki_pin and t.spki_pin in (pin, getattr(info, "spki_pin", None)):
                raise VaultMeshError("VM-TSA-DUPLICATE", f"TSA {t.name} of the policy is pinned to the same "
                                     "signing key", "one key is one authority: add a TSA with its own signing key")
        new = Policy(cur.signers, dict(cur.thresholds), (*cur.tsas, PolicyTsa(name, ca_pem, pin)),
                     {**cur.tokens_required, WILDCARD: require})
        summary = f"add TSA {name}; entries need {require} token(s) from distinct policy TSAs"
        body: dict[str, Any] = {"type": "policy", "log": st.log_id, "recorded_at": now_rfc3339(),
                                "message": f"{summary} (amends policy {st.current.entry.body_digest})",
                                **new.body_fields()}
        try:
            Policy.from_body(body, "the new policy")
        except VaultMeshError as exc:
            raise VaultMeshError("VM-USAGE", exc.cause,
                                 f"--require is at most the number of policy TSAs ({len(new.tsas)})") from None
        key = signing_key(repo)
        may_sign(cur, key, "policy", lambda _: (f"your key {key.fingerprint} may not sign policy changes under "
                                                "the policy in force", "ask a policy signer to run `git vaultmesh tsa add`"))
        need = cur.threshold("policy")
        if need > 1 and not args.propose:
            raise VaultMeshError(
                "VM-POLICY-UNAUTHORIZED",
                f"the policy in force needs {need} signatures on a policy change; one signer cannot append it",
                f"stage it: git vaultmesh tsa add {name} --url {args.url} --ca-cert {args.ca_cert} --propose "
                "change.json; then each other signer runs `git vaultmesh policy sign change.json`, and anyone "
                "`git vaultmesh policy apply change.json`")
        entry = sign_body(body, key)
        repo.config_set(f"vaultmesh.tsa.{name}.url", args.url)  # operational; harmless if the change is not adopted
        out: dict[str, Any] = {"ok": True, "tsa": name, "url": args.url, "require": require, "summary": summary}
        if info is not None:
            out["probe"] = {"gen_time": info.gen_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "signer": info.signer_subject, "spki_pin": info.spki_pin,
                            "signer_not_after": info.signer_not_after.strftime("%Y-%m-%dT%H:%M:%SZ")}
        if args.propose:
            write_proposal(args.propose, entry)
            have = signing_rule(cur, "policy").evaluate(frozenset({key.fingerprint}))
            out.update({"appended": False, "proposal": args.propose})
            lines = [f"proposed: {summary}", f"wrote {args.propose}: {have.detail}",
                     f"next: other signers run `git vaultmesh policy sign {args.propose}`, then "
                     f"`git vaultmesh policy apply {args.propose}`"]
            return _report(args, out, lines)
        judged = judge_change(cur, entry, st.verifier)
        if not judged.ok:
            raise VaultMeshError(judged.code or "VM-POLICY-UNAUTHORIZED", f"policy change not applied: {judged.detail}",
                                 "only signatures by signers of the policy in force count")
        # the new policy entry is judged by the policy before it, which may itself require tokens
        result, stamps = append_change(st, key, entry)
        out.update({"appended": True, "entry": entry.id, "seq": result.first_seq,
                    "timestamps": stamps.as_json(entry.id)})
        lines = [f"policy changed as entry #{result.first_seq} ({entry.id[:12]}): {summary}",
                 f"  URL {args.url} saved as git config vaultmesh.tsa.{name}.url"]
        if info is not None:
            lines.append(f"  probe token OK: signer {info.signer_subject!r}, SPKI pin {info.spki_pin}, "
                         f"certificate valid until {info.signer_not_after:%Y-%m-%d}")
            if pin is None:
                lines.append(f"  (to pin this signer key too, a later policy change can carry --pin-spki "
                             f"{info.spki_pin})")
        code = _report(args, out, lines)
        stamps.warn(entry.id)
        return code
    finally:
        st.verifier.close()


def _report(args: argparse.Namespace, data: dict[str, Any], lines: list[str]) -> int:
    return report(bool(getattr(args, "json", False)), data, lines)


# --- list --------------------------------------------------------------------------------------------------

def _list(args: argparse.Namespace) -> int:
    from cryptography import x509

    from ..config import Settings
    from .policy import load_state

    repo = Repo.discover()
    st = load_state(repo)
    st.verifier.close()
    pol = st.current.policy
    settings = Settings(repo)
    rows: list[dict[str, Any]] = []
    for t in pol.tsas:
        ca = x509.load_pem_x509_certificate(t.ca_cert.encode())
        rows.append({"name": t.name, "url": settings.tsa_url(t.name), "spki_pin": t.spki_pin,
                     "ca_subject": ca.subject.rfc4514_string(),
                     "ca_not_after": ca.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "ca_sha256": hashlib.sha256(t.ca_cert.encode()).hexdigest()})
    if args.json:
        print_json({"tsas": rows, "tokens_required": dict(pol.tokens_required)})
        return 0
    if not rows:
        print("no TSA in the policy in force (add one with `git vaultmesh tsa add`)")
    for r in rows:
        print(f"{r['name']}: {r['url'] or '(no URL: git config vaultmesh.tsa.' + r['name'] + '.url URL)'}")
        print(f"  CA {r['ca_subject']} valid until {r['ca_not_after']}"
              + (f"; signer pinned {r['spki_pin']}" if r["spki_pin"] else ""))
    req = ", ".join(f"{k}: {v}" for k, v in sorted(pol.tokens_required.items()))
    print(f"tokens required: {req or 'none'}")
    return 0


# --- serve -------------------------------------------------------------------------------------------------

def _serve(args: argparse.Namespace) -> int:
    from ..rfc3161.server import TsaServer, load_identity, make_identity, write_identity
    from ..rfc3161.tsa import spki_pin_of

    ca_path: Path | None = None
    if args.identity:
        directory = Path(args.identity)
        if (directory / "ca.pem").exists():
            ident = load_identity(directory)
        else:
            ident = make_identity(args.key_type)
            write_identity(ident, directory)
        ca_path = directory / "ca.pem"
    else:
        ident = make_identity(args.key_type)
    if args.max_lifetime < 0:
        raise VaultMeshError("VM-USAGE", "--max-lifetime must be >= 0 seconds (0: until stopped)",
                             "e.g. --max-lifetime 3600")
    try:
        server = TsaServer(ident, host=args.host, port=args.port, max_lifetime=args.max_lifetime)
        server.start()
    except ValueError as exc:
        raise VaultMeshError("VM-USAGE", str(exc), "the built-in TSA listens on loopback only: --host 127.0.0.1 "
                             "(or ::1); put a real TSA or a reverse proxy in front for anything else") from None
    except OSError as exc:
        raise VaultMeshError("VM-USAGE", f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
                             "choose another --port (0 picks a free one)") from None
    life = f"stops after {args.max_lifetime:g} s" if args.max_lifetime else "runs until stopped"
    print(f"RFC 3161 TSA listening on {server.url} ({life}; Ctrl-C stops it)")
    print(f"signer SPKI pin: {spki_pin_of(ident.cert_pem)}")
    if ca_path is not None:
        print(f"CA certificate: {ca_path}")
        print(f"add it: git vaultmesh tsa add NAME --url {server.url} --ca-cert {ca_path}")
    else:
        print("ephemeral identity (pass --identity DIR to keep it); its CA certificate:")
        print(ident.ca_cert_pem.decode("ascii"), end="")
    sys.stdout.flush()
    server.serve_forever()
    return 0
