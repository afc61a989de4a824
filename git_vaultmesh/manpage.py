"""git-vaultmesh(1) in roff, generated from the argparse parser when the wheel is built (setup.py), so the
man page `git vaultmesh --help` opens always matches the verbs. Standard library only."""

from __future__ import annotations

import argparse
import datetime

from . import __version__


def _esc(text: str) -> str:
    lines = []
    for line in text.replace("\\", "\\\\").splitlines():
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line.replace("-", "\\-"))
    return "\n".join(lines)


def _options(p: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction) or a.help == argparse.SUPPRESS:
            continue
        if a.option_strings:
            name = ", ".join(a.option_strings)
            if a.nargs != 0:
                meta = a.metavar if isinstance(a.metavar, str) else a.dest.upper()
                name += f" {meta}"
        else:
            name = str(a.metavar or a.dest)
        out += [".TP", f"\\fB{_esc(name)}\\fR", _esc(a.help or "")]
    return out


def render(parser: argparse.ArgumentParser, date: str | None = None) -> str:
    date = date or datetime.date.today().isoformat()
    out = [f'.TH GIT-VAULTMESH 1 "{date}" "git-vaultmesh {__version__}" "Git Manual"',
           ".SH NAME", "git\\-vaultmesh \\- signed, timestamped, Merkle\\-anchored release receipts in git",
           ".SH SYNOPSIS", f"\\fBgit vaultmesh\\fR {_esc(parser.format_usage().split(' ', 3)[-1].strip())}",
           ".SH DESCRIPTION", _esc(parser.description or ""), ".SH OPTIONS", *_options(parser),
           ".SH COMMANDS"]

    def verbs(prefix: str, p: argparse.ArgumentParser) -> None:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, child in a.choices.items():
                    full = f"{prefix} {name}".strip()
                    out.extend([".SS", f"\\fBgit vaultmesh {_esc(full)}\\fR",
                                ".nf", _esc(child.format_usage().replace("usage: ", "").strip()), ".fi",
                                ".PP", ".nf", _esc(child.description or ""), ".fi", *_options(child)])
                    verbs(full, child)

    verbs("", parser)
    out += [".SH EXIT STATUS", _esc(parser.epilog or ""), ".SH SEE ALSO", "\\fBgit\\fR(1), \\fBgpg\\fR(1)"]
    return "\n".join(out) + "\n"
