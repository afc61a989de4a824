"""The wheel as a user gets it: built from this checkout, installed into a fresh venv, then `git vaultmesh
--help` (the man page, MANPATH unset), completion scripts (bash really completing through git's own completion)
and `config check` on a broken file. One venv for the module; it reuses the already installed dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GIT_COMPLETION = next((p for p in ("/usr/share/bash-completion/completions/git",
                                   "/etc/bash_completion.d/git") if Path(p).exists()), None)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__",
                                                            ".*_cache", "site", ".hypothesis"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(tmp / "dist")],
                   check=True, capture_output=True)
    wheel = next((tmp / "dist").glob("git_vaultmesh-*.whl"))
    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env)], check=True)
    subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                    str(wheel)], check=True, capture_output=True, env=user_env(env))
    return env


def user_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "PYTHONPATH", "PYTHONPYCACHEPREFIX")}
    env.update(PATH=f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", MANPAGER="cat", PAGER="cat", GIT_PAGER="cat")
    return env


def sh(cwd: Path, venv: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=cwd, env=user_env(venv), capture_output=True, text=True)


def test_installed_package_is_the_wheel(venv: Path, repo: Path) -> None:
    r = sh(repo, venv, "python", "-c", "import git_vaultmesh; print(git_vaultmesh.__file__)")
    assert r.stdout.startswith(str(venv)), r.stdout


@pytest.mark.skipif(shutil.which("man") is None, reason="man(1) is not installed")
def test_help_opens_the_man_page(venv: Path, repo: Path) -> None:
    assert (venv / "share" / "man" / "man1" / "git-vaultmesh.1").exists()
    for cmd in (["git", "vaultmesh", "--help"], ["git", "help", "vaultmesh"]):
        r = sh(repo, venv, *cmd)
        assert r.returncode == 0, (cmd, r.stderr)
        assert "GIT-VAULTMESH(1)" in r.stdout and "git vaultmesh verify" in r.stdout.replace("‐", "-")
    r = sh(repo, venv, "git", "vaultmesh", "-h")
    assert r.returncode == 0 and "completion" in r.stdout and "config" in r.stdout
    assert sh(repo, venv, "git", "vaultmesh", "help", "verify").stdout.startswith("usage: git vaultmesh verify")


def test_completion_scripts(venv: Path, repo: Path) -> None:
    for shell in ("bash", "zsh", "fish"):
        r = sh(repo, venv, "git", "vaultmesh", "completion", shell)
        assert r.returncode == 0 and "check-proof" in r.stdout, shell
    script = repo.parent / "vm-completion.bash"
    script.write_text(sh(repo, venv, "git", "vaultmesh", "completion", "bash").stdout)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


@pytest.mark.skipif(GIT_COMPLETION is None, reason="git's bash completion is not installed")
def test_bash_completes_git_vaultmesh_ver_tab(venv: Path, repo: Path) -> None:
    script = repo.parent / "vm-completion.bash"
    script.write_text(sh(repo, venv, "git", "vaultmesh", "completion", "bash").stdout)
    driver = f"""
source {GIT_COMPLETION}
source {script}
complete -p git-vaultmesh
COMP_WORDS=(git vaultmesh ver); COMP_CWORD=2; COMP_LINE="git vaultmesh ver"; COMP_POINT=${{#COMP_LINE}}
__git_wrap__git_main; echo "git:${{COMPREPLY[*]}}"
COMPREPLY=(); COMP_WORDS=(git vaultmesh policy add-s); COMP_CWORD=3; COMP_LINE="git vaultmesh policy add-s"
COMP_POINT=${{#COMP_LINE}}; __git_wrap__git_main; echo "sub:${{COMPREPLY[*]}}"
COMPREPLY=(); COMP_WORDS=(git-vaultmesh verify --all --tr); COMP_CWORD=3
_git_vaultmesh; echo "opt:${{COMPREPLY[*]}}"
"""
    r = subprocess.run(["bash", "-i"], input=driver, cwd=repo, env=dict(user_env(venv), HOME=str(repo.parent)),
                       capture_output=True, text=True)
    lines = dict(line.split(":", 1) for line in r.stdout.splitlines() if ":" in line)
    assert lines.get("git", "").split() == ["verify"], r.stdout + r.stderr
    assert lines.get("sub", "").split() == ["add-signer"], r.stdout
    assert lines.get("opt", "").split() == ["--trust-root"], r.stdout
    assert "complete -o default -F _git_vaultmesh git-vaultmesh" in r.stdout


def test_config_check_on_a_broken_file(venv: Path, repo: Path) -> None:
    (repo / ".vaultmesh.toml").write_text("[vaultmesh]\ntsatimeout = \"soon\"\nsigningkee = \"ABCD\"\n")
    r = sh(repo, venv, "git", "vaultmesh", "config", "check")
    assert r.returncode == 1
    assert ".vaultmesh.toml:2: vaultmesh.tsaTimeout = 'soon'" in r.stderr
    assert "did you mean vaultmesh.signingkey?" in r.stderr
    assert "Traceback" not in r.stderr
