#!/usr/bin/env python3
"""A synthetic repository shaped like a large public project, built with one `git fast-import` stream.

    python benchmarks/gen_repo.py [--commits 70000] [--rebuild]

Shape (the defaults are those of a real 70k-commit history measured by hand):

* history: topic branches of 1-6 commits forked from a recent main-line commit and merged back, so about a
  quarter of all commits are merges; some merges take 3-5 branches at once (octopus); a few commits go
  straight to main;
* tree: >= 4,400 files, >= 42 MB, blob sizes log-normal (median ~3 KB, a long tail up to 2 MB), text-like
  (so packs compress as source code does) except ~3 % binary files (images, firmware: incompressible bytes),
  directories up to 9 levels deep, some executables and symlinks, a `.gitmodules` and one gitlink to a
  separate small repository (`sub.git`), moved forward now and then;
* commits change 1-3 files of a "hot" set (now and then a binary file too), with log-normal message sizes (a
  subject and a body of a few hundred bytes, merges a shortlog), increasing dates;
* annotated tags `vMAJOR.MINOR` every ~700 commits, on the main line, each carrying an armored signature
  block of an ed25519 signature's size. It is not a verifiable signature (a real one would make the tag ids
  differ from machine to machine); nothing git-vaultmesh does reads tag signatures, so only the size matters.

Everything comes from one seeded PRNG, so every machine builds the same commit ids. The result is cached under
`/tmp/vm-bench-cache/real-<hash of the parameters>/` (`repo.git` bare, `sub.git`, `meta.json` with the
counts and the build time); a build goes to a temporary directory first and is renamed into place, so an
interrupted build never leaves a half repository behind. `checkout(...)` makes a cheap `--shared` clone of it,
with or without the submodule's repository present.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

GENERATOR_VERSION = 2  # bump when the generated repository changes, so stale caches are not reused
CACHE = Path("/tmp/vm-bench-cache")
EPOCH = 1_400_000_000
SUB_PATH = b"third_party/libfoo"

GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.org",
    "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.org",
}


@dataclass(frozen=True)
class Params:
    commits: int = 70_000
    files: int = 4_400
    tree_bytes: int = 42_000_000
    tag_every: int = 700
    hot_files: int = 600  # files that later commits touch (the rest stay as the first commit wrote them)
    seed: int = 15

    def key(self) -> str:
        text = json.dumps({"v": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Built:
    root: Path  # the cache directory
    repo: Path  # bare superproject
    sub: Path  # bare submodule repository
    meta: dict[str, object]

    @property
    def tags(self) -> list[str]:
        return list(self.meta["tags"])  # type: ignore[call-overload]


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    res = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, input=input, capture_output=True)
    if res.returncode != 0:
        sys.exit(f"git {' '.join(args)} failed in {cwd}:\n{res.stderr.decode(errors='replace')}")
    return res.stdout.decode()


# --- content ------------------------------------------------------------------------------------------------
_SYLLABLES = ["ab", "al", "an", "ar", "ba", "be", "ca", "co", "de", "di", "el", "en", "er", "fo", "ga", "in",
              "io", "ka", "le", "li", "lo", "ma", "me", "mo", "na", "ne", "no", "or", "pa", "pe", "ra", "re",
              "ri", "ro", "sa", "se", "si", "ta", "te", "ti", "to", "un", "ur", "va", "ve", "xi", "za"]


def text_pool(rng: random.Random, size: int) -> bytes:
    """Source-like text (identifiers, indentation, punctuation): compresses about as well as code does."""
    words = ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(3000)]
    lines: list[str] = []
    total = 0
    while total < size:
        indent = "    " * rng.choice((0, 1, 1, 2, 2, 3))
        body = " ".join(rng.choices(words, k=rng.randint(1, 12)))
        line = f"{indent}{body}{rng.choice((';', ' {', '}', ',', '', ' = 0;', '()'))}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


class Content:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pool = text_pool(rng, 4 << 20)

    def blob(self, size: int, tag: bytes) -> bytes:
        """`size` bytes of text that start with `tag` (so blobs of equal size differ)."""
        head = b"/* " + tag + b" */\n"
        out = [head]
        left = size - len(head)
        while left > 0:
            off = self.rng.randrange(0, len(self.pool) - 1)
            piece = self.pool[off:off + left]
            out.append(piece)
            left -= len(piece)
        return b"".join(out)[:max(size, len(head))]


def lognormal_sizes(rng: random.Random, n: int, total: int) -> list[int]:
    """n blob sizes, log-normal (sigma 1.5, like source trees), scaled so that they add up to `total`."""
    raw = [min(rng.lognormvariate(math.log(3000), 1.5), 2_000_000) for _ in range(n)]
    scale = total / sum(raw)
    return [max(1, int(s * scale)) for s in raw]


def directory_paths(rng: random.Random, files: int) -> list[bytes]:
    """File paths in a directory tree up to 9 levels deep, wide near the top like real projects."""
    dirs: list[tuple[bytes, int]] = [(b"", 0)]
    frontier = [(b"", 0)]
    tops = [b"arch", b"drivers", b"fs", b"include", b"kernel", b"lib", b"net", b"tools", b"docs", b"scripts",
            b"src", b"tests", b"mm", b"crypto", b"sound"]
    while frontier and len(dirs) < max(40, files // 7):
        parent, depth = frontier.pop(0)
        if depth >= 9:
            continue
        names = tops if depth == 0 else [
            "".join(rng.choices(_SYLLABLES, k=rng.randint(1, 3))).encode()
            for _ in range(rng.choice((1, 2, 2, 3, 4, 6)) if depth < 6 else rng.choice((0, 1, 1)))]
        for name in dict.fromkeys(names):
            d = (parent + name + b"/", depth + 1)
            dirs.append(d)
            frontier.append(d)
    rng.shuffle(frontier)
    paths: set[bytes] = set()
    while len(paths) < files:
        d, depth = rng.choice(dirs[1:])
        name = "".join(rng.choices(_SYLLABLES, k=rng.randint(2, 4))) + rng.choice(
            (".c", ".c", ".h", ".py", ".rs", ".md", ".txt", ".json", ".S", ""))
        paths.add(d + name.encode())
    return sorted(paths)


# --- the two repositories ---------------------------------------------------------------------------------------
def _commit(ref: bytes, mark: int, when: int, msg: bytes, parents: list[int], changes: list[bytes]) -> bytes:
    stamp = b"%d +0000" % when
    out = [b"commit ", ref, b"\nmark :%d\n" % mark,
           b"author Bench Author <author@example.org> ", stamp, b"\n",
           b"committer Bench Committer <committer@example.org> ", stamp, b"\n",
           b"data %d\n" % len(msg), msg, b"\n"]
    if parents:
        out.append(b"from :%d\n" % parents[0])
        out.extend(b"merge :%d\n" % p for p in parents[1:])
    out.extend(changes)
    return b"".join(out)


def _inline(mode: bytes, path: bytes, data: bytes) -> bytes:
    return b"M " + mode + b" inline " + path + b"\ndata %d\n" % len(data) + data + b"\n"


def build_sub(where: Path, rng: random.Random, content: Content) -> list[str]:
    """A small library repository (40 commits, 60 files); returns its main-line commit ids, oldest first."""
    git(where, "init", "--quiet", "--bare", "--initial-branch=main", ".")
    paths = [b"src/%s.c" % "".join(rng.choices(_SYLLABLES, k=3)).encode() for _ in range(60)]
    stream = [b"feature done\n"]
    for i in range(40):
        touched = paths if i == 0 else rng.sample(paths, 2)
        changes = [_inline(b"100644", p, content.blob(rng.randint(200, 20_000), b"sub %d %s" % (i, p)))
                   for p in touched]
        stream.append(_commit(b"refs/heads/main", i + 1, EPOCH + i * 3600, b"libfoo change %d\n" % i,
                              [i] if i else [], changes))
    stream.append(b"done\n")
    subprocess.run(["git", "fast-import", "--quiet", "--done"], cwd=where, env=GIT_ENV, check=True,
                   input=b"".join(stream))
    return git(where, "rev-list", "--reverse", "--first-parent", "main").split()


def message(rng: random.Random, n: int, merge_of: int = 0) -> bytes:
    """A commit message: a subject and a log-normal body (median ~300 bytes), trailers; merges a shortlog."""
    subject = " ".join(rng.choices(_WORDS, k=rng.randint(3, 9)))
    if merge_of:
        lines = [f"Merge branch{'es' if merge_of > 1 else ''} of topic {n}", ""]
        lines += [f"  * {' '.join(rng.choices(_WORDS, k=rng.randint(3, 8)))}" for _ in range(rng.randint(1, 12))]
        return ("\n".join(lines) + "\n").encode()
    body_len = int(min(rng.lognormvariate(math.log(300), 0.9), 8000))
    words: list[str] = []
    total = 0
    while total < body_len:
        w = rng.choice(_WORDS)
        words.append(w)
        total += len(w) + 1
    body = "\n".join(" ".join(words[i:i + 11]) for i in range(0, len(words), 11))
    return (f"{subject} ({n})\n\n{body}\n\nSigned-off-by: Bench Author <author@example.org>\n").encode()


_WORDS = ["fix", "add", "remove", "driver", "buffer", "lock", "race", "memory", "leak", "update", "docs",
          "support", "handle", "error", "path", "config", "module", "refactor", "cleanup", "test", "when",
          "the", "a", "of", "in", "for", "on", "with", "to", "and", "is", "not", "that", "this", "after"]


def _signature_block(rng: random.Random) -> bytes:
    """An armored block the size of a gpg ed25519 tag signature (119 bytes of packet, base64)."""
    packet = base64.b64encode(rng.randbytes(119)).decode()
    lines = [packet[i:i + 64] for i in range(0, len(packet), 64)]
    return ("-----BEGIN PGP SIGNATURE-----\n\n" + "\n".join(lines) + "\n=" + packet[:4]
            + "\n-----END PGP SIGNATURE-----\n").encode()


def superproject_stream(p: Params, rng: random.Random, content: Content, sub_commits: list[str],
                        meta: dict[str, object]) -> Iterator[bytes]:
    paths = directory_paths(rng, p.files - 3)  # + .gitmodules, the gitlink, README
    sizes = lognormal_sizes(rng, len(paths), p.tree_bytes)
    hot = rng.sample(range(len(paths)), min(p.hot_files, len(paths)))
    hot = [i for i in hot if sizes[i] < 64_000] or hot  # commits mostly touch ordinary source files
    yield b"feature done\n"
    hot_set = set(hot)
    binary = {i for i in range(len(paths)) if i not in hot_set and rng.random() < 0.03}
    changing_binary = [i for i in sorted(binary) if sizes[i] < 200_000]
    first: list[bytes] = []
    for i, (path, size) in enumerate(zip(paths, sizes)):
        r = rng.random()
        if r < 0.01 and i > 0:
            first.append(b"M 120000 inline " + path + b"\ndata %d\n" % len(paths[i - 1]) + paths[i - 1] + b"\n")
        elif i in binary:
            first.append(_inline(b"100644", path, rng.randbytes(size)))
        else:
            first.append(_inline(b"100755" if r < 0.04 else b"100644", path, content.blob(size, path)))
    gitmodules = b'[submodule "libfoo"]\n\tpath = %s\n\turl = https://example.org/libfoo.git\n' % SUB_PATH
    first.append(_inline(b"100644", b".gitmodules", gitmodules))
    first.append(_inline(b"100644", b"README", content.blob(4000, b"README")))
    sub_at = 0
    first.append(b"M 160000 " + sub_commits[0].encode() + b" " + SUB_PATH + b"\n")
    mark = 1
    yield _commit(b"refs/heads/main", mark, EPOCH, b"Initial import\n", [], first)
    main: list[int] = [1]  # main-line marks, newest last
    made, merges, octopus, next_tag, tags = 1, 0, 0, p.tag_every, []

    def change(n: int) -> list[bytes]:
        nonlocal sub_at
        out = []
        for i in rng.sample(hot, rng.choice((1, 1, 1, 2, 2, 3))):
            size = max(64, int(sizes[i] * rng.uniform(0.9, 1.1)))
            out.append(_inline(b"100644", paths[i], content.blob(min(size, 64_000), b"%d %s" % (n, paths[i]))))
        if changing_binary and rng.random() < 0.005:  # a new icon, a firmware update
            i = rng.choice(changing_binary)
            out.append(_inline(b"100644", paths[i], rng.randbytes(max(64, int(sizes[i] * rng.uniform(0.8, 1.2))))))
        if n % 5000 == 0 and sub_at + 1 < len(sub_commits):
            sub_at += 1
            out.append(b"M 160000 " + sub_commits[sub_at].encode() + b" " + SUB_PATH + b"\n")
        return out

    while made < p.commits:
        left = p.commits - made
        when = EPOCH + made * 600
        if left == 1 or rng.random() < 0.08:  # straight to main
            mark += 1
            yield _commit(b"refs/heads/main", mark, when, message(rng, made), [main[-1]], change(made))
            main.append(mark)
            made += 1
        else:
            k = 1 if rng.random() < 0.97 else rng.randint(3, 5)  # branches this merge takes
            tips: list[int] = []
            for _ in range(k):
                length = rng.randint(1, 5)
                if made + length + 1 > p.commits:
                    break
                parent = main[-min(len(main), rng.randint(1, 6))]
                for _ in range(length):
                    mark += 1
                    yield _commit(b"refs/heads/topic", mark, EPOCH + made * 600, message(rng, made), [parent],
                                  change(made))
                    parent = mark
                    made += 1
                tips.append(parent)
            if not tips:
                continue
            mark += 1
            yield _commit(b"refs/heads/main", mark, EPOCH + made * 600, message(rng, made, len(tips)),
                          [main[-1], *tips], [])
            main.append(mark)
            made += 1
            merges += 1
            octopus += len(tips) > 1
        if made >= next_tag:
            name = f"v{len(tags) // 100 + 1}.{len(tags) % 100}"
            msg = f"Release {name}\n".encode() + _signature_block(rng)
            yield (b"tag " + name.encode() + b"\nfrom :%d\n" % main[-1]
                   + b"tagger Bench Tagger <tagger@example.org> %d +0000\n" % (EPOCH + made * 600)
                   + b"data %d\n" % len(msg) + msg)
            tags.append(name)
            next_tag += p.tag_every
    yield b"done\n"
    meta.update(commits=made, merges=merges, octopus=octopus, tags=tags)


def ensure(p: Params, *, rebuild: bool = False, quiet: bool = False) -> Built:
    """The cached repositories for `p`, built on first use; prints the build time."""
    root = CACHE / f"real-{p.commits}-{p.key()}"
    if rebuild and root.exists():
        shutil.rmtree(root)
    meta_path = root / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if not quiet:
            print(f"repository {root.name}: {meta['commits']} commits, cached (built in {meta['build_seconds']:.0f} s)")
        return Built(root, root / "repo.git", root / "sub.git", meta)
    CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"building-{p.commits}-", dir=CACHE))
    t0 = time.perf_counter()
    rng = random.Random(p.seed)
    content = Content(rng)
    (building / "sub.git").mkdir()
    sub_commits = build_sub(building / "sub.git", rng, content)
    repo = building / "repo.git"
    repo.mkdir()
    git(repo, "init", "--quiet", "--bare", "--initial-branch=main", ".")
    proc = subprocess.Popen(["git", "fast-import", "--quiet", "--done"], cwd=repo,
                            env=GIT_ENV, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    meta: dict[str, object] = {"params": asdict(p)}
    buf: list[bytes] = []
    size = 0
    for chunk in superproject_stream(p, rng, content, sub_commits, meta):
        buf.append(chunk)
        size += len(chunk)
        if size > 1 << 20:
            proc.stdin.write(b"".join(buf))
            buf, size = [], 0
    proc.stdin.write(b"".join(buf))
    proc.stdin.close()
    if proc.wait() != 0:
        sys.exit("git fast-import failed")
    git(repo, "update-ref", "-d", "refs/heads/topic")
    git(repo, "commit-graph", "write", "--reachable")  # a clone of a real project has one
    tip = str(meta["tags"][-1])  # type: ignore[index]
    files = git(repo, "ls-tree", "-r", "-l", tip).splitlines()
    meta["tree_files"] = len(files)
    meta["tree_bytes"] = sum(int(f.split()[3]) for f in files if f.split()[3] != "-")
    meta["build_seconds"] = round(time.perf_counter() - t0, 1)
    (building / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    if meta_path.exists():  # another build finished first
        shutil.rmtree(building)
    else:
        shutil.rmtree(root, ignore_errors=True)
        building.rename(root)
    if not quiet:
        m = meta
        print(f"repository {root.name}: {m['commits']} commits ({m['merges']} merges, {m['octopus']} octopus), "
              f"{m['tree_files']} files / {int(m['tree_bytes']) / 1e6:.1f} MB, {len(m['tags'])} tags "  # type: ignore[arg-type]
              f"- built with git fast-import in {m['build_seconds']} s")
    return Built(root, root / "repo.git", root / "sub.git", meta)


def checkout(built: Built, dest: Path, *, submodule: bool) -> Path:
    """A bare `--shared` clone of the cached repository at `dest` (cheap: objects are borrowed), with the
    submodule's repository under `modules/` (where git keeps it) when `submodule`, so the tree digest
    recurses into it; without it the digest records the submodule as not-included."""
    subprocess.run(["git", "clone", "--quiet", "--bare", "--shared", str(built.repo), str(dest)], env=GIT_ENV,
                   check=True)
    if submodule:
        mod = dest / "modules" / SUB_PATH.decode()
        mod.parent.mkdir(parents=True)
        subprocess.run(["git", "clone", "--quiet", "--bare", "--shared", str(built.sub), str(mod)], env=GIT_ENV,
                       check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=Params.commits)
    ap.add_argument("--rebuild", action="store_true", help="build again even if cached")
    a = ap.parse_args()
    built = ensure(Params(commits=a.commits), rebuild=a.rebuild)
    print(built.repo)


if __name__ == "__main__":
    main()
