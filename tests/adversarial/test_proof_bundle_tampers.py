"""Bundle-level tampers, each needing one specific check of `check-proof` (signature of the checkpoint, commit
bytes hashing to the claimed id, consistency and inclusion proofs, completeness, format version, shape).
Disabling any one of those checks makes at least one of these fail. Black-box through the CLI."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import GpgKey, git, vm, vm_ok


def _commit(repo: Path, name: str) -> None:
    (repo / name).write_text(name + "\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", name)


@pytest.fixture
def bundle(ledger_repo: Path, tmp_path: Path) -> dict[str, Any]:
    vm_ok(ledger_repo, "record", "v1.0")
    old = git(ledger_repo, "rev-parse", "HEAD~1")
    _commit(ledger_repo, "more")
    git(ledger_repo, "tag", "-a", "v1.1", "-m", "v1.1")
    vm_ok(ledger_repo, "record", "v1.1")
    out = tmp_path / "b.json"
    vm_ok(ledger_repo, "prove", old, "--in", "v1.1", "--from", "v1.0", "-o", str(out))
    data: dict[str, Any] = json.loads(out.read_text())
    data["_other_commit_raw"] = base64.b64encode(
        git(ledger_repo, "cat-file", "commit", "HEAD").encode() + b"\n").decode()
    return data


def _check(tmp_path: Path, root: str, content: bytes) -> tuple[int, set[str], str]:
    p = tmp_path / "t.json"
    p.write_bytes(content)
    empty = tmp_path / "nowhere"
    empty.mkdir(exist_ok=True)
    res = vm(empty, "check-proof", "--trust-root", root, str(p), "--json")
    assert "Traceback" not in res.stderr, res.stderr
    codes: set[str] = set()
    try:
        doc = json.loads(res.stdout)
        codes = {c["code"] for c in doc.get("checks", []) if not c["ok"] and c.get("code")}
    except ValueError:
        pass
    codes |= {w for w in res.stderr.replace(":", " ").replace("]", " ").replace("[", " ").split()
              if w.startswith("VM-")}
    return res.returncode, codes, res.stdout + res.stderr


def _flip_sig(b: dict[str, Any]) -> None:
    s = b["checkpoint"]["sig"]
    lines = s.splitlines()
    mid = len(lines) // 2
    ln = lines[mid]
    lines[mid] = ln[:5] + ("A" if ln[5] != "A" else "B") + ln[6:]
    b["checkpoint"]["sig"] = "\n".join(lines) + "\n"


def _other_raw(b: dict[str, Any]) -> None:
    b["commit"]["raw"] = b["_other_commit_raw"]


def _bad_consistency(b: dict[str, Any]) -> None:
    p = b["consistency"]["proof"]
    p[0] = ("00" if p[0][:2] != "00" else "11") + p[0][2:] if p else p.append("00" * 32)


def _bad_inclusion(b: dict[str, Any]) -> None:
    e = b["entries"][-1]
    e["inclusion"] = e["inclusion"][1:] + ["ab" * 32]


def _index_changed(b: dict[str, Any]) -> None:
    b["entries"][-1]["index"] += 1


def _line_flipped(b: dict[str, Any]) -> None:
    e = b["entries"][-1]
    e["line"] = e["line"].replace('"release"', '"releasE"', 1) if '"release"' in e["line"] else e["line"][:-2] + "x}"


def _duplicated(b: dict[str, Any]) -> None:
    b["entries"].append(dict(b["entries"][-1]))


def _policy_dropped(b: dict[str, Any]) -> None:
    b["entries"] = [e for e in b["entries"] if '"type":"policy"' not in e["line"]]


def _v1(b: dict[str, Any]) -> None:
    b["format"] = "vaultmesh-proof-v1"


def _later_format(b: dict[str, Any]) -> None:
    b["format"] = "vaultmesh-proof-v9"  # a version this checker does not know is not read as its own


def _negative_index(b: dict[str, Any]) -> None:
    b["entries"][-1]["index"] = -1


def _entry_not_an_object(b: dict[str, Any]) -> None:
    b["entries"].append(5)


def _sig_not_text(b: dict[str, Any]) -> None:
    b["checkpoint"]["sig"] = 5


def _entries_reordered(b: dict[str, Any]) -> None:
    b["entries"].reverse()  # found by the fuzz target: order was not checked (formats say ascending by index)


def _log_renamed(b: dict[str, Any]) -> None:
    b["log"] = "0" * 32


# the shape tampers were found by mutation testing (benchmarks/mutation.py): each kills a mutant that survived
TAMPERS: dict[str, tuple[Callable[[dict[str, Any]], None], set[str]]] = {
    "format-later-version": (_later_format, {"VM-PROOF-MALFORMED"}),
    "index-negative": (_negative_index, {"VM-PROOF-MALFORMED"}),
    "entry-not-an-object": (_entry_not_an_object, {"VM-PROOF-MALFORMED"}),
    "checkpoint-sig-not-text": (_sig_not_text, {"VM-PROOF-MALFORMED"}),
    "log-field-of-another-log": (_log_renamed, {"VM-PROOF-MALFORMED"}),
    "entries-out-of-order": (_entries_reordered, {"VM-PROOF-MALFORMED"}),
    "checkpoint-sig-flipped": (_flip_sig, {"VM-CHECKPOINT-SIG"}),
    "commit-raw-of-another-commit": (_other_raw, {"VM-PROOF-INVALID"}),
    "consistency-proof-wrong": (_bad_consistency, {"VM-PROOF-INVALID"}),
    "inclusion-proof-wrong": (_bad_inclusion, {"VM-PROOF-INVALID"}),
    "index-changed": (_index_changed, {"VM-PROOF-INVALID", "VM-PROOF-INCOMPLETE"}),
    "entry-line-byte-flipped": (_line_flipped, {"VM-PROOF-INVALID"}),
    "entry-duplicated": (_duplicated, {"VM-PROOF-MALFORMED", "VM-ENTRY-DUPLICATE"}),
    "policy-entry-dropped": (_policy_dropped, {"VM-PROOF-INCOMPLETE"}),
    "v1-bundle": (_v1, {"VM-PROOF-VERSION"}),
}


def test_untampered_bundle_passes(bundle: dict[str, Any], tmp_path: Path, gpg_key: GpgKey) -> None:
    del bundle["_other_commit_raw"]
    rc, codes, out = _check(tmp_path, gpg_key.fingerprint, json.dumps(bundle).encode())
    assert rc == 0, out
    assert bundle["format"] == "vaultmesh-proof-v2"


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_bundle_tamper(name: str, bundle: dict[str, Any], tmp_path: Path, gpg_key: GpgKey) -> None:
    fn, want = TAMPERS[name]
    fn(bundle)
    del bundle["_other_commit_raw"]
    rc, codes, out = _check(tmp_path, gpg_key.fingerprint, json.dumps(bundle).encode())
    assert rc == 1, out
    assert codes & want, f"{name}: want one of {want}, got {codes}\n{out}"


@pytest.mark.parametrize("content", [b"not json {", b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe\x00garbage\x80"],
                         ids=["non-json", "deep-nesting", "non-utf8"])
def test_unreadable_bundle_is_coded(content: bytes, tmp_path: Path, gpg_key: GpgKey) -> None:
    rc, codes, out = _check(tmp_path, gpg_key.fingerprint, content)
    assert rc in (1, 2), out
    assert codes & {"VM-PROOF-MALFORMED", "VM-FILE-UNREADABLE"}, out
