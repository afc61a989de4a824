"""`install`: hooks (chained, never clobbering), ledger refspecs and notes display; `--uninstall` undoes it.

What install adds is written down in <git dir>/vaultmesh/install.json (each hook it placed, each config value
it added), so `--uninstall` removes exactly that: a value that was there before stays, a hook that was there
before is renamed back byte for byte with its mode.
"""

from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import VaultMeshError
from ..git import Repo
from ..ui import print_json

CLIENT_HOOKS = ("pre-commit", "pre-push", "reference-transaction", "post-rewrite")
SERVER_HOOKS = ("pre-receive",)
MARKER = "# git-vaultmesh hook"
NOTES_REF = "refs/notes/vaultmesh"


def state_file(repo: Repo) -> Path:
    return repo.git_dir / "vaultmesh" / "install.json"


def load_state(repo: Repo) -> dict[str, Any]:
    from .. import statefile

    return statefile.read(state_file(repo)) or {"hooks": {}, "config": []}


def save_state(repo: Repo, state: dict[str, Any]) -> None:
    from .. import statefile

    path = state_file(repo)
    if not state["hooks"] and not state["config"]:
        path.unlink(missing_ok=True)
        return
    statefile.write(path, state, indent=2)


def is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(encoding="utf-8", errors="replace")[:400]
    except OSError:
        return False


def template(name: str) -> str:
    return (resources.files("git_vaultmesh") / "hooks" / name).read_text(encoding="utf-8")


def install_hook(hooks: Path, name: str, state: dict[str, Any]) -> str:
    from .hook import CHAINED_SUFFIX  # here, not at the top: doctor reads the state without the hook runner

    target = hooks / name
    saved = Path(str(target) + CHAINED_SUFFIX)
    chained = False
    if target.exists() or target.is_symlink():
        if is_ours(target):
            chained = saved.exists()
        elif saved.exists() or saved.is_symlink():
            raise VaultMeshError("VM-HOOK-CONFLICT",
                                 f"{target} is not git-vaultmesh's, and {saved.name} (where install keeps the hook it "
                                 "chains to) is taken", "move one of them away, then run install again")
        else:
            os.replace(target, saved)  # a rename: same bytes, same mode, same inode
            chained = True
    hooks.mkdir(parents=True, exist_ok=True)
    tmp = hooks / f".{name}.vaultmesh-tmp"
    tmp.write_text(template(name), encoding="utf-8")
    tmp.chmod(0o755)
    os.replace(tmp, target)
    state["hooks"][str(target)] = {"chained": chained}
    return f"{name}: installed" + (f" (runs your previous hook first: {saved.name})" if chained else "")


def uninstall_hook(target: Path) -> str:
    from .hook import CHAINED_SUFFIX

    saved = Path(str(target) + CHAINED_SUFFIX)
    if target.exists() and not is_ours(target):
        raise VaultMeshError("VM-HOOK-CONFLICT",
                             f"{target} was replaced since install; removing it would lose that hook",
                             f"remove it by hand (your previous hook is {saved.name}), then run --uninstall again")
    target.unlink(missing_ok=True)
    if saved.exists() or saved.is_symlink():
        os.replace(saved, target)
        return f"{target.name}: removed; your previous hook is back"
    return f"{target.name}: removed"


def wanted_config(repo: Repo, remotes: list[str]) -> list[tuple[str, str]]:
    """(key, value) pairs the refspecs and notes display need; which remote.<R>.push keeps plain `git push`."""
    pairs: list[tuple[str, str]] = []
    for r in remotes:
        for spec in (f"refs/vaultmesh/log*:refs/vaultmesh/remotes/{r}/log*",
                     f"refs/notes/vaultmesh*:refs/vaultmesh/remotes/{r}/notes*",
                     f"refs/vaultmesh/keep/*:refs/vaultmesh/remotes/{r}/keep/*"):
            pairs.append((f"remote.{r}.fetch", spec))
        if not repo.config_get_values(f"remote.{r}.push"):
            # Any remote.<R>.push replaces push.default: say explicitly what a bare `git push` sent before.
            mode = (repo.config_get("push.default") or "simple").lower()
            if mode in ("simple", "current", "upstream", "tracking"):
                pairs.append((f"remote.{r}.push", "HEAD"))
            elif mode == "matching":
                pairs.append((f"remote.{r}.push", ":"))
        for spec in ("refs/vaultmesh/log*:refs/vaultmesh/log*", "refs/notes/vaultmesh*:refs/notes/vaultmesh*",
                     "refs/vaultmesh/keep/*:refs/vaultmesh/keep/*"):
            pairs.append((f"remote.{r}.push", spec))
    pairs.append(("notes.displayRef", NOTES_REF))
    return pairs


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    state = load_state(repo)
    done: list[str] = []
    if args.uninstall:
        for path in list(state["hooks"]):
            done.append(uninstall_hook(Path(path)))
            del state["hooks"][path]
            save_state(repo, state)
        for key, value in list(state["config"]):
            repo.config_unset_value(key, value)
            state["config"].remove([key, value])
            done.append(f"config: removed {key} = {value}")
        save_state(repo, state)
    else:
        if not args.no_hooks:
            hooks = repo.hooks_dir()
            names = SERVER_HOOKS if args.server else CLIENT_HOOKS
            for name in names:
                done.append(install_hook(hooks, name, state))
                save_state(repo, state)
        if not args.no_refspecs and not args.server:
            remotes = args.remote or repo.remotes()
            missing = [r for r in args.remote if r not in repo.remotes()]
            if missing:
                raise VaultMeshError("VM-USAGE", f"no remote named {', '.join(missing)}",
                                     "see `git remote -v`")
            for key, value in wanted_config(repo, remotes):
                if value in repo.config_get_values(key):
                    continue
                repo.config_add(key, value)
                state["config"].append([key, value])
                save_state(repo, state)
                done.append(f"config: {key} = {value}")
    if args.json:
        print_json({"ok": True, "uninstall": args.uninstall, "changes": done})
    else:
        print("\n".join(done) if done else "nothing to do")
    return 0
