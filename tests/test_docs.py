"""The docs as tests: every shell block of the README, the quickstart and the by-hand recipes runs, in order,
in one shell per page, and the outputs the pages show are checked.

Conventions (docs/design-notes.md, "Docs that run"):
- A ```sh block runs as written; it must exit 0; its output is not compared.
- A ```console block is a transcript: `$ ` starts a command (a line ending in `\\` continues it), the lines
  below it up to the next `$ ` are its expected output (stdout and stderr together). `...` matches any text
  within a line; a line that is only `...` matches any number of lines. A last line `(exit N)` expects exit
  status N; otherwise the command must exit 0.
- `<!-- doc-test: skip -->` on the line before a fence leaves that block out (installing, a placeholder the
  page's setup cannot provide). Every fence of a tested page names its language, so no shell block hides in
  an untyped fence.
- Example values a reader replaces with their own (their key's fingerprint, their clone's path) are listed
  per page below and replaced by the throwaway values; each must appear in its page.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT, gen_gpg_key, throwaway_gpg_home

SKIP = "<!-- doc-test: skip -->"
EXIT = re.compile(r"^\(exit (\d+)\)$")
PROJECT_FPR = "0AA6CD5B935E54B0D7BEA2C58D48582F4559E76F"  # the example key of README and quickstart
ORIGIN_URL = "https://example.org/shop.git"


@dataclass
class Command:
    text: str
    expected: list[str]
    exit: int
    line: int


@dataclass
class Block:
    kind: str  # "sh" | "console"
    text: str
    line: int
    commands: list[Command] = field(default_factory=list)


def parse(markdown: str) -> list[Block]:
    """The runnable blocks of a page, in order; an untyped fence is an error (it could hide a shell block)."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(`{3,})(.*)$", lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).strip()
        start = i + 1
        j = start
        while j < len(lines) and not lines[j].startswith(fence):
            j += 1
        body = lines[start:j]
        if not info:
            raise ValueError(f"line {i + 1}: a fence without a language")
        prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        if info in ("sh", "console") and prev.strip() != SKIP:
            block = Block(info, "\n".join(body) + "\n", start + 1)
            if info == "console":
                block.commands = _transcript(body, start + 1)
            blocks.append(block)
        i = j + 1
    return blocks


def _transcript(body: list[str], first_line: int) -> list[Command]:
    commands: list[Command] = []
    k = 0
    while k < len(body):
        line = body[k]
        if not line.startswith("$ "):
            raise ValueError(f"line {first_line + k}: console output before any `$ ` command")
        text = line[2:]
        n = k
        while text.endswith("\\") and k + 1 < len(body):
            k += 1
            text += "\n" + body[k]
        k += 1
        out: list[str] = []
        while k < len(body) and not body[k].startswith("$ "):
            out.append(body[k].rstrip())
            k += 1
        while out and not out[-1]:
            out.pop()
        code = 0
        if out and EXIT.match(out[-1]):
            code = int(EXIT.match(out[-1]).group(1))  # type: ignore[union-attr]
            out.pop()
        commands.append(Command(text, out, code, first_line + n))
    return commands


def matches(expected: list[str], actual: str) -> bool:
    """`...` within a line: any text; a line of only `...`: any lines (also none)."""
    pattern = ""
    for line in expected:
        if line == "...":
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += "[^\n]*?".join(re.escape(part) for part in line.split("...")) + r"\n"
    got = [ln.rstrip() for ln in actual.splitlines()]
    while got and not got[-1]:
        got.pop()
    while got and not got[0]:
        got.pop(0)
    return re.fullmatch(pattern, "".join(ln + "\n" for ln in got)) is not None


def script(blocks: list[Block], token: str) -> str:
    out = ["set -e"]
    for b, block in enumerate(blocks):
        out.append(f"printf '\\n{token} BLOCK {b}\\n'")
        if block.kind == "sh":
            out.append(block.text.rstrip("\n"))
            continue
        for c, cmd in enumerate(block.commands):
            out.append(f"printf '\\n{token} CMD {b}.{c}\\n'")
            out.append(f"__rc=0\n{{ {cmd.text}\n}} 2>&1 || __rc=$?\nprintf '\\n{token} RC %s\\n' \"$__rc\"")
    out.append(f"printf '\\n{token} DONE\\n'")
    return "\n".join(out) + "\n"


def run_page(page: str, blocks: list[Block], cwd: Path, env: dict[str, str]) -> None:
    token = "@@doc-" + secrets.token_hex(4)
    path = cwd.parent / "doc-script.sh"
    path.write_text(script(blocks, token))
    out_path = cwd.parent / "doc-script.out"
    # output to a file, not a pipe: a server a page starts in the background must not hold the run open; the
    # shell gets its own process group, and whatever it leaves running is stopped with it
    with out_path.open("wb") as out:
        proc = subprocess.Popen(["bash", str(path)], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=300)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait()
    stdout = out_path.read_text(errors="replace")
    chunks = re.split(rf"\n?{re.escape(token)} ", "\n" + stdout)
    outputs: dict[str, str] = {}
    codes: dict[str, int] = {}
    last, done = "start", False
    for chunk in chunks[1:]:
        head, _, rest = chunk.partition("\n")
        kind, _, ident = head.partition(" ")
        done = done or kind == "DONE"
        if kind == "RC":
            codes[last] = int(ident)
            continue
        if kind in ("BLOCK", "CMD"):
            last = f"{kind} {ident}"
        outputs[last] = outputs.get(last, "") + rest
    if returncode != 0 or not done:
        block = blocks[int(last.split()[1].split(".")[0])] if last != "start" else None
        where = f"{page}:{block.line}" if block else page
        pytest.fail(f"{where}: a ```sh block failed (exit {returncode}):\n{block.text if block else ''}\n"
                    f"--- output ---\n{outputs.get(last, '')[-3000:]}", pytrace=False)
    failures = []
    for b, block in enumerate(blocks):
        for c, cmd in enumerate(block.commands):
            key = f"CMD {b}.{c}"
            got, rc = outputs.get(key, ""), codes.get(key)
            if rc != cmd.exit or not matches(cmd.expected, got):
                failures.append(f"{page}:{cmd.line}: $ {cmd.text}\n  exit {rc} (expected {cmd.exit})\n"
                                f"--- expected ---\n" + "\n".join(cmd.expected) + f"\n--- got ---\n{got.strip()}")
    if failures:
        pytest.fail("a page's shown output drifted from the code:\n\n" + "\n\n".join(failures), pytrace=False)


def read_page(page: str, substitutions: dict[str, str]) -> list[Block]:
    text = (ROOT / page).read_text()
    for example, value in substitutions.items():
        assert example in text, f"{page} no longer shows {example!r}: update test_docs.py"
        text = text.replace(example, value)
    return parse(text)


# --- the throwaway world a page runs in -------------------------------------------------------------------


@dataclass
class World:
    root: Path
    env: dict[str, str]
    fpr: str


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A throwaway user: HOME with a git identity, a gpg key, `git vaultmesh` on PATH, a remote `origin`."""
    with throwaway_gpg_home() as home:
        key = gen_gpg_key(home, "Ann Releaser")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "git-vaultmesh"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m git_vaultmesh "$@"\n')
        shim.chmod(0o755)
        (tmp_path / "home").mkdir(exist_ok=True)
        (tmp_path / "tmp").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "VAULTMESH"))}
        env.update(HOME=str(tmp_path / "home"), GNUPGHOME=home, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
                   TMPDIR=str(tmp_path / "tmp"), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C", LANG="C", TZ="UTC")
        origin = tmp_path / "origin.git"

        def git(*args: str, cwd: Path = tmp_path) -> None:
            subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

        for k, v in {"user.name": "Ann Releaser", "user.email": "ann.releaser@example.org",
                     "init.defaultBranch": "main", f"url.{origin}.insteadOf": ORIGIN_URL}.items():
            git("config", "--global", k, v)
        yield World(tmp_path, env, key.fingerprint)


def make_project(world: World) -> Path:
    """The reader's repository `shop`: two commits, pushed to its remote `origin` (ORIGIN_URL)."""
    env = world.env

    def git(*args: str, cwd: Path) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    git("init", "-q", "--bare", "origin.git", cwd=world.root)
    git("clone", "-q", ORIGIN_URL, "shop", cwd=world.root)
    shop = world.root / "shop"
    for i, text in enumerate(["print('hello')\n", "print('hello, world')\n"]):
        (shop / "app.py").write_text(text)
        git("add", "app.py", cwd=shop)
        git("commit", "-q", "-m", f"change {i}", cwd=shop)
    git("push", "-q", "origin", "main", cwd=shop)
    return shop


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_project_pages_run_as_written(world: World, page: str) -> None:
    shop = make_project(world)
    run_page(page, read_page(page, {PROJECT_FPR: world.fpr}), shop, world.env)


def _demo(world: World) -> tuple[Path, str]:
    """`git vaultmesh demo --keep`, its genuine ledger restored as verify-by-hand.md says."""
    res = subprocess.run([sys.executable, "-m", "git_vaultmesh", "demo", "--keep", "--json"], cwd=world.root,
                         env=world.env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    import json

    kept = Path(json.loads(res.stdout)["kept"])
    shop = kept / "shop"
    subprocess.run(["git", "-C", str(shop), "update-ref", "refs/vaultmesh/log", "refs/vaultmesh/log~1"],
                   check=True, env=world.env)
    fpr = subprocess.run(["git", "-C", str(shop), "config", "vaultmesh.trustRoot"], check=True, env=world.env,
                         capture_output=True, text=True).stdout.strip()
    return kept, fpr


def test_verify_by_hand_runs_on_the_demo_ledger(world: World) -> None:
    page = "docs/verify-by-hand.md"
    kept, fpr = _demo(world)
    try:
        subs = {"path/to/the/clone": str(kept / "shop"), "B64AA379A074E8186982BD3792D9DFF370F9F41C": fpr,
                "path/to/shop-1.0.tar.gz": str(kept / "shop-1.0.tar.gz"),
                "path/to/verify_standalone.py": str(ROOT / "contrib" / "verify_standalone.py")}
        scratch = world.root / "scratch"
        scratch.mkdir()
        run_page(page, read_page(page, subs), scratch, world.env)
        # the page's other recipe on the same ledger: a token checked by hand (docs/timestamps.md)
        page = "docs/timestamps.md"
        run_page(page, read_page(page, {}), kept / "shop", world.env)
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=dict(world.env, GNUPGHOME=str(kept / "g")),
                       capture_output=True)
        shutil.rmtree(kept, ignore_errors=True)


def test_docs_stand_on_their_own() -> None:
    """Users never have the internal design document: no page may send them to it."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    cited = [f"{p.relative_to(ROOT)}:{n}" for p in pages
             for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bDESIGN\b", line)]
    assert not cited, f"pages citing the internal design document: {cited}"


# --- the checker itself must be able to fail --------------------------------------------------------------


def test_matcher_wildcards_and_drift() -> None:
    assert matches(["recorded release shop v1.0 as entry #1 (...)", "..."], "recorded release shop v1.0 as entry #1 (ab12)\nx\ny\n")
    assert matches(["a", "...", "z"], "a\nz\n")
    assert not matches(["recorded release shop v1.0 as entry #2 (...)"], "recorded release shop v1.0 as entry #1 (ab)\n")
    assert not matches(["a"], "a\nb\n")


def test_a_drifted_page_fails(tmp_path: Path) -> None:
    page = "```console\n$ echo one\none\n$ echo two; (exit 3)\ntwo\n(exit 3)\n```\n"
    blocks = parse(page)
    assert [c.exit for c in blocks[0].commands] == [0, 3]
    cwd = tmp_path / "w"
    cwd.mkdir()
    run_page("good.md", blocks, cwd, dict(os.environ))
    with pytest.raises(pytest.fail.Exception, match="echo one"):
        run_page("drift.md", parse(page.replace("\none\n$", "\nuno\n$")), cwd, dict(os.environ))
    with pytest.raises(pytest.fail.Exception, match=r"exit 0 \(expected 3\)"):
        run_page("exit.md", parse(page.replace("; (exit 3)", "")), cwd, dict(os.environ))
    with pytest.raises(pytest.fail.Exception, match="failed"):
        run_page("sh.md", parse("```sh\nfalse\n```\n"), cwd, dict(os.environ))
    with pytest.raises(ValueError, match="without a language"):
        parse("```\ngit vaultmesh init\n```\n")
