"""`demo`: the whole story on an embedded default — a throwaway repo, an ephemeral OpenPGP key, the built-in
loopback TSA — record, verify, tamper one byte of the ledger, verify fails with its code.

Exit 0 means the demo behaved as the tool promises (the tampered ledger was rejected), so it doubles as a
smoke test of a fresh install.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import ledger
from ..entry import entry_path
from ..errors import VaultMeshError
from ..git import RefUpdate, Repo
from ..ui import print_json

_IDENTITY = {
    "GIT_AUTHOR_NAME": "Demo Releaser", "GIT_AUTHOR_EMAIL": "releaser@example.org",
    "GIT_COMMITTER_NAME": "Demo Releaser", "GIT_COMMITTER_EMAIL": "releaser@example.org",
}


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _gpg(args: list[str]) -> str:
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise VaultMeshError("VM-TOOL-MISSING", f"{args[0]} is not installed", f"install {args[0]}") from None
    if res.returncode != 0:
        raise VaultMeshError("VM-SIGN-FAILED",
                             f"{' '.join(args[:3])} failed: {res.stderr.strip()[-300:]}",
                             "the demo makes a throwaway gpg key: check that gpg works (`gpg --version`) "
                             "and run it again")
    return res.stdout.strip()


def _cli(*argv: str, quiet: bool = False) -> int:
    """Run one of our own verbs in-process; `quiet` keeps its output out of demo's --json."""
    import contextlib
    import io

    from ..cli import main

    if not quiet:
        return main(list(argv))
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return main(list(argv))


def _tamper_one_byte(repo: Repo, seq: int) -> str:
    """What an attacker with push access would do: edit one byte of an entry and commit on top."""
    head = ledger.read_head(repo)
    assert head.commit is not None
    path = entry_path(seq)
    oid = repo.path_oid(head.commit, path)
    assert oid is not None
    line = repo.read_object(oid)[1]
    marker = b'"sha256":"'
    pos = line.index(marker) + len(marker)
    forged = line[:pos] + (b"0" if line[pos:pos + 1] != b"0" else b"1") + line[pos + 1:]
    (blob,) = repo.write_blobs([forged])
    tree = repo.build_tree(head.tree, {path: blob})
    commit = repo.commit_tree(tree, [head.commit], "innocent-looking update\n")
    if not repo.update_refs([RefUpdate(ledger.REF_LOG, commit, head.commit)]):
        raise VaultMeshError("VM-RACE-LOST", "demo ledger moved", "run the demo again")
    return path


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="vmdemo-", dir="/tmp" if os.path.isdir("/tmp") else None))
    gnupghome = workdir / "g"  # short: gpg-agent's socket path is limited
    gnupghome.mkdir(mode=0o700)
    steps: list[dict[str, Any]] = []

    def step(name: str, rc: int, expect: int) -> None:
        steps.append({"step": name, "exit": rc, "expected": expect, "ok": rc == expect})
        if not args.json:
            print(f"--- {name}: exit {rc} ({'as expected' if rc == expect else 'UNEXPECTED'})\n")

    server = None
    try:
        with _env({"GNUPGHOME": str(gnupghome), "GIT_CONFIG_NOSYSTEM": "1", **_IDENTITY}):
            _gpg(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
                   "Demo Releaser <releaser@example.org>", "ed25519", "sign", "1d"])
            listing = _gpg(["gpg", "--batch", "--with-colons", "--list-secret-keys"])
            fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
            repo_dir = workdir / "shop"
            repo_dir.mkdir()
            with Repo.init_at(repo_dir) as shop:
                for i, text in enumerate(["print('hello')\n", "print('hello, world')\n", "VERSION = '1.0'\n"]):
                    (repo_dir / f"app{i}.py").write_text(text)
                    shop.commit_all(f"change {i}")
                shop.tag_annotated("v1.0", "release v1.0")
                shop.config_set("vaultmesh.signingKey", fpr)
            artifact = workdir / "shop-1.0.tar.gz"
            artifact.write_bytes(b"pretend this is the release tarball\n")
            server = _start_tsa(repo_dir)
            if not args.json:
                where = "" if args.keep else " (removed when the demo ends; --keep keeps it)"
                print(f"demo repository: {repo_dir}{where}\nephemeral OpenPGP key: {fpr}\n")
            os.chdir(repo_dir)
            step("git vaultmesh init", _cli("init", quiet=args.json), 0)
            if server is not None:
                step("git vaultmesh tsa add demo-tsa (built-in loopback TSA)",
                     _cli("tsa", "add", "demo-tsa", "--url", server.url, "--ca-cert", str(workdir / "tsa-ca.pem"), quiet=args.json), 0)
            step("git vaultmesh record v1.0 --artifact shop-1.0.tar.gz", _cli("record", "v1.0", "--artifact", str(artifact), quiet=args.json), 0)
            step("git vaultmesh verify v1.0 --artifact shop-1.0.tar.gz", _cli("verify", "v1.0", "--artifact", str(artifact), quiet=args.json), 0)
            with Repo.discover(repo_dir) as repo:
                seq = ledger.read_head(repo).size - 1
                while seq > 0:
                    oid = repo.path_oid(ledger.read_head(repo).commit or "", entry_path(seq))
                    if oid and b'"type":"release"' in repo.read_object(oid)[1]:
                        break
                    seq -= 1
                path = _tamper_one_byte(repo, seq)
            if not args.json:
                print(f"*** tampering: flipped one byte of {path} in refs/vaultmesh/log ***\n")
            step("git vaultmesh verify v1.0 (tampered ledger)", _cli("verify", "v1.0", quiet=args.json), 1)
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["gpgconf", "--kill", "all"], env=dict(os.environ, GNUPGHOME=str(gnupghome)),
                       capture_output=True)
        os.chdir(workdir.parent)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    ok = all(s["ok"] for s in steps)
    if args.json:
        print_json({"ok": ok, "steps": steps, "kept": str(workdir) if args.keep else None})
    else:
        print("demo: " + ("OK — the tampered ledger was rejected" if ok else "FAILED — see the steps above"))
        if args.keep:
            print(f"kept: {workdir}")
    return 0 if ok else 1


def _start_tsa(repo_dir: Path) -> Any:
    """The built-in RFC 3161 server on 127.0.0.1, with a fresh demo CA; None if the tsa command is absent."""
    try:
        import importlib

        importlib.import_module("git_vaultmesh.commands.tsa")
        from ..rfc3161.server import TsaServer, make_identity
    except ImportError:
        return None
    ident = make_identity("ec")
    (repo_dir.parent / "tsa-ca.pem").write_bytes(ident.ca_cert_pem)
    return TsaServer(ident, max_lifetime=300).start()
