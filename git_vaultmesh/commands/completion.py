"""`completion SHELL`: bash, zsh and fish completion scripts generated from the argparse parser itself, so
they cannot drift from the verbs; nothing is imported for this on ordinary runs."""

from __future__ import annotations

import argparse

from ..cli import build_parser


def _tree(parser: argparse.ArgumentParser) -> dict[str, tuple[list[str], list[str]]]:
    """'' and 'verb' and 'verb sub' -> (subcommands, options)."""
    out: dict[str, tuple[list[str], list[str]]] = {}

    def walk(prefix: str, p: argparse.ArgumentParser) -> None:
        subs: list[str] = []
        opts: list[str] = []
        for action in p._actions:
            opts += [o for o in action.option_strings if o.startswith("--") or len(o) == 2]
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    subs.append(name)
                    walk(f"{prefix} {name}".strip(), child)
        out[prefix] = (subs, opts)

    walk("", parser)
    return out


def bash(tree: dict[str, tuple[list[str], list[str]]]) -> str:
    cases = "".join(f'        "{k}") subs="{" ".join(s)}"; opts="{" ".join(o)}" ;;\n' for k, (s, o) in tree.items())
    return f'''# bash completion for git-vaultmesh and `git vaultmesh` (git's completion calls _git_vaultmesh)
_git_vaultmesh() {{
    local i start=-1 path="" cur="${{COMP_WORDS[COMP_CWORD]}}" subs opts w
    for ((i = 0; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in vaultmesh|git-vaultmesh|*/git-vaultmesh) start=$i; break ;; esac
    done
    [ "$start" -lt 0 ] && return 0
    for ((i = start + 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        case "$w" in -C) ((i++)); continue ;; -*) continue ;; esac
        case "${{path:+$path }}$w" in
{"".join(f'            "{k}") path="{k}" ;;{chr(10)}' for k in tree if k)}            *) ;;
        esac
    done
    case "$path" in
{cases}    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
        [ ${{#COMPREPLY[@]}} -eq 0 ] && [ -z "$subs" ] && COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
}}
complete -o default -F _git_vaultmesh git-vaultmesh
'''


def zsh(tree: dict[str, tuple[list[str], list[str]]]) -> str:
    return "#compdef git-vaultmesh\n# zsh: bash-style completion through bashcompinit\n" \
           "autoload -U +X bashcompinit && bashcompinit\n" + bash(tree) + \
           "zstyle ':completion:*:*:git:*' user-commands vaultmesh:'signed, timestamped release receipts'\n"


def fish(tree: dict[str, tuple[list[str], list[str]]]) -> str:
    lines = ["# fish completion for git-vaultmesh and `git vaultmesh`"]
    verbs = " ".join(tree[""][0])
    for cmd, cond0 in (("git-vaultmesh", "true"), ("git", "__fish_seen_subcommand_from vaultmesh")):
        lines.append(f"complete -c {cmd} -f -n '{cond0}; and not __fish_seen_subcommand_from {verbs}' "
                     f"-a '{verbs}'")
        for key, (subs, opts) in tree.items():
            if not key:
                continue
            verb = key.split()[-1]
            cond = f"{cond0}; and __fish_seen_subcommand_from {verb}"
            if subs:
                lines.append(f"complete -c {cmd} -f -n '{cond}' -a '{' '.join(subs)}'")
            for o in opts:
                if o.startswith("--"):
                    lines.append(f"complete -c {cmd} -n '{cond}' -l {o[2:]}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    tree = _tree(build_parser())
    print({"bash": bash, "zsh": zsh, "fish": fish}[args.shell](tree), end="")
    return 0
