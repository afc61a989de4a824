"""Helpers shared by test_policy.py and test_ssh.py: several users working on one repository, and entries
injected with the tool's own append API, to prove that `verify` itself refuses what the CLI would never write.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from git_vaultmesh import ledger
from git_vaultmesh.entry import Entry, canonical, make_entry, now_rfc3339
from git_vaultmesh.git import Repo
from git_vaultmesh.signing import SigningKey, resolve_signing_key, sign

from conftest import git, vm


def as_user(key: str, fmt: str = "openpgp") -> dict[str, str]:
    """Environment equivalent to `git -c vaultmesh.signingKey=KEY -c vaultmesh.signingFormat=FMT`."""
    return {"GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "vaultmesh.signingKey", "GIT_CONFIG_VALUE_0": key,
            "GIT_CONFIG_KEY_1": "vaultmesh.signingFormat", "GIT_CONFIG_VALUE_1": fmt}


def run_as(cwd: Path, key: str, *args: str, fmt: str = "openpgp") -> subprocess.CompletedProcess[str]:
    res = vm(cwd, *args, env=as_user(key, fmt))
    assert "Traceback" not in res.stderr, res.stderr
    return res


def ok_as(cwd: Path, key: str, *args: str, fmt: str = "openpgp") -> str:
    res = run_as(cwd, key, *args, fmt=fmt)
    assert res.returncode == 0, f"{' '.join(args)} as {key[:20]}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def refused(res: subprocess.CompletedProcess[str], code: str) -> str:
    """A refusal: exit 1, exactly one `error: CODE:` line and a hint; returns stderr."""
    assert res.returncode == 1, f"expected {code}, got {res.returncode}:\n{res.stdout}\n{res.stderr}"
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {code}: "), res.stderr
    assert any(ln.startswith("hint: ") for ln in res.stderr.splitlines()), res.stderr
    return res.stderr


def verify_json(cwd: Path, *args: str) -> tuple[int, dict[str, Any]]:
    res = vm(cwd, "verify", *args, "--json")
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout)


def failures(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if not c["ok"]]


def codes(report: dict[str, Any]) -> set[str]:
    return {c["code"] for c in failures(report)}


def ledger_refs(cwd: Path) -> str:
    return git(cwd, "for-each-ref", "refs/vaultmesh/", "refs/notes/vaultmesh")


def tag(cwd: Path, name: str) -> str:
    """A new commit tagged `name`; returns the commit id."""
    (cwd / f"{name}.txt").write_text(name + "\n")
    git(cwd, "add", ".")
    git(cwd, "commit", "-q", "-m", name)
    git(cwd, "tag", "-a", name, "-m", name)
    return git(cwd, "rev-parse", "HEAD")


def key(spec: str, fmt: str = "openpgp") -> SigningKey:
    return resolve_signing_key(fmt, spec)  # type: ignore[arg-type]


def entries(cwd: Path) -> list[Entry]:
    return ledger.load(Repo.discover(cwd))[1]


def inject(cwd: Path, body: dict[str, Any], signers: Sequence[SigningKey], appender: SigningKey) -> Entry:
    """Sign `body` with `signers` and append it with ledger.append (checkpoint signed by `appender`)."""
    entry = make_entry(body, [{"format": k.format, "signer": k.fingerprint, "sig": sign(k, canonical(body))}
                              for k in signers])
    ledger.append(Repo.discover(cwd), appender, [entry])
    return entry


def inject_line(cwd: Path, entry: Entry, appender: SigningKey) -> None:
    ledger.append(Repo.discover(cwd), appender, [entry])


def cosign_body(cwd: Path, target: Entry, message: str) -> dict[str, Any]:
    return {"type": "cosign", "log": target.body["log"], "recorded_at": now_rfc3339(),
            "entry": target.body_digest, "message": message}


def deploy_body(cwd: Path, message: str) -> dict[str, Any]:
    """A deploy receipt of HEAD, as `record --type deploy` would write it."""
    commit = git(cwd, "rev-parse", "HEAD")
    return {"type": "deploy", "log": entries(cwd)[0].body["log"], "recorded_at": now_rfc3339(),
            "component": cwd.name, "message": message,
            "subject": {"commit": commit, "tree": git(cwd, "rev-parse", "HEAD^{tree}")}}


def ssh_keypair(tmp_path: Path, name: str) -> tuple[str, str]:
    """(private key path, SHA256 fingerprint) of a fresh unencrypted ed25519 key."""
    path = tmp_path / f"id_{name}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@example.org", "-f", str(path)],
                   check=True, capture_output=True)
    out = subprocess.run(["ssh-keygen", "-l", "-f", f"{path}.pub"], check=True, capture_output=True, text=True)
    return str(path), out.stdout.split()[1]
