"""The architecture as tests: git is run from git.py only, and other processes only where a module's job
is to run them (gpg / ssh-keygen, the TSA client and server, the user's build, chained hooks)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "git_vaultmesh"

# module -> why it may start processes
SUBPROCESS_ALLOWED = {
    "git.py": "the one door to git",
    "signing.py": "gpg, gpgv and ssh-keygen",
    "covenants.py": "covenant II runs the user's release build (sh -c)",
    "commands/demo.py": "makes a throwaway gpg key",
    "commands/hook.py": "runs the hook that was there before install, and record for auto-recorded tags",
    "commands/adr.py": "opens $EDITOR for an ADR's text",
    "commands/query.py": "pages long output through $PAGER on a terminal",
}


def _modules() -> list[tuple[str, ast.Module]]:
    return [(str(p.relative_to(PKG)), ast.parse(p.read_text(), str(p))) for p in sorted(PKG.rglob("*.py"))]


def test_only_the_allowed_modules_start_processes() -> None:
    offenders = []
    for name, tree in _modules():
        if name.startswith("rfc3161/") or name in SUBPROCESS_ALLOWED:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("subprocess", "pty") for n in names):
                    offenders.append(f"{name}:{node.lineno}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("system", "popen", "execvp", "spawnv")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "os"):
                offenders.append(f"{name}:{node.lineno}")
    assert not offenders, f"processes started outside the allowed modules: {offenders}"


def test_git_commands_are_spelled_only_in_git_py() -> None:
    """Nothing outside git.py passes git a sub-command: `repo.run("fetch", …)` belongs in a named Repo
    method, so every ref change goes through the compare-and-swap and lock handling there."""
    offenders = []
    for name, tree in _modules():
        if name == "git.py":
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("run", "try_run") and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                    and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess")):
                offenders.append(f"{name}:{node.lineno} {node.func.attr}({node.args[0].value!r})")
            if (isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant)
                    and node.elts[0].value == "git"):
                offenders.append(f"{name}:{node.lineno} [\"git\", …]")
    assert not offenders, f"git run outside git.py: {offenders}"


def test_no_private_ledger_function_is_called_from_another_module() -> None:
    offenders = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in ("ledger", "git", "policy", "merkle")):
                offenders.append(f"{name}:{node.lineno} {node.value.id}.{node.attr}")
    assert not offenders, offenders
