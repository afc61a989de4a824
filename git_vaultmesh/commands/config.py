"""`config`: every setting with its value, origin and default; `config check` judges them against the schema."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..config import SCHEMA, loads_toml, schema_key, validated
from ..errors import VaultMeshError
from ..git import Repo


def _line_of(path: str, key: str) -> int | None:
    """Line of `key` in a git config or TOML file (git reports files, not lines)."""
    name = key.rsplit(".", 1)[-1].lower()
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for n, line in enumerate(lines, 1):
        left = line.split("=", 1)[0].strip().lower()
        if "=" in line and left == name:
            return n
    return None


def _entries(repo: Repo, origins: list[tuple[str, str, str, str]] | None = None) -> list[dict[str, Any]]:
    """Every vaultmesh.* setting with where it comes from; `origins`: config_origins already read (doctor)."""
    found: list[dict[str, Any]] = []
    for scope, origin, key, value in origins if origins is not None else repo.config_origins(r"^vaultmesh\."):
        if not key.startswith("vaultmesh."):
            continue
        short = key[len("vaultmesh."):]
        where = origin[len("file:"):] if origin.startswith("file:") else origin
        line = _line_of(where, short) if origin.startswith("file:") else None
        found.append({"key": short, "value": value, "scope": scope, "file": where, "line": line})
    if repo.work_tree is not None:
        path = Path(repo.work_tree) / ".vaultmesh.toml"
        if path.exists():
            try:
                data = loads_toml(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                found.append({"key": None, "value": None, "scope": "worktree-file", "file": str(path),
                              "line": None, "syntax": str(exc)})
                return found
            section = data.get("vaultmesh", data)

            def walk(prefix: str, table: dict[str, Any]) -> None:
                for k, v in table.items():
                    if isinstance(v, dict):
                        walk(f"{prefix}{k}.", v)
                    else:
                        found.append({"key": f"{prefix}{k}", "value": v, "scope": "worktree-file",
                                      "file": str(path), "line": _line_of(str(path), str(k))})

            if isinstance(section, dict):
                walk("", section)
    return found


def problems(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names = [k for k in SCHEMA if "NAME" not in k]
    for e in entries:
        where = f"{e['file']}:{e['line']}" if e.get("line") else e["file"]
        if "syntax" in e:
            out.append({"where": where, "problem": f"not valid TOML: {e['syntax']}", "hint": "fix the syntax"})
            continue
        if schema_key(e["key"]) is None:
            import difflib

            near = difflib.get_close_matches(e["key"].lower(), names, n=1, cutoff=0.6)
            hint = f"did you mean vaultmesh.{near[0]}?" if near else "see `git vaultmesh config` for every key"
            out.append({"where": where, "key": e["key"], "problem": f"unknown key vaultmesh.{e['key']}",
                        "hint": hint})
            continue
        try:
            validated(e["key"], e["value"])
        except VaultMeshError as exc:
            out.append({"where": where, "key": e["key"], "problem": exc.cause, "hint": exc.hint})
    return out


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover(".")
    entries = _entries(repo)
    if getattr(args, "config_command", None) == "check":
        found = problems(entries)
        if args.json:
            print(json.dumps({"ok": not found, "problems": found}, indent=2))
        for p in found:
            print(f"{p['where']}: {p['problem']} ({p['hint']})", file=sys.stderr)
        if not found and not args.json:
            print(f"{len(entries)} setting(s), all valid")
        return 1 if found else 0
    by_key: dict[str, dict[str, Any]] = {}
    for entry in entries:  # git config wins over .vaultmesh.toml; within git, the last value read wins
        if entry.get("key"):
            k = str(entry["key"]).lower()
            if entry["scope"] != "worktree-file" or k not in by_key:
                by_key[k] = entry
    rows = []
    for key, s in SCHEMA.items():
        hits: list[dict[str, Any] | None] = [h for k, h in by_key.items() if schema_key(k) == key]
        for e in hits or [None]:
            rows.append({"key": e["key"] if e else key, "value": e["value"] if e else None,
                         "origin": (f"{e['file']}:{e['line']}" if e.get("line") else e["file"]) if e else "default",
                         "default": s.default, "meaning": s.meaning})
    if args.json:
        print(json.dumps({"ok": True, "settings": rows}, indent=2, default=str))
        return 0
    for r in rows:
        value = r["value"] if r["value"] is not None else f"(default: {r['default']})"
        print(f"vaultmesh.{r['key']} = {value}\t[{r['origin']}]")
    return 0
