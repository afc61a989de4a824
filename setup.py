"""Builds the man page git-vaultmesh(1) from the argparse parser and installs it as share/man/man1, where
man(1) finds it from a venv or `pip install --user` (PATH's bin/../share/man). Everything else is in
pyproject.toml."""

import datetime
import os
import sys

from setuptools import setup

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from git_vaultmesh.cli import build_parser  # noqa: E402  (standard library only)
from git_vaultmesh.manpage import render  # noqa: E402

man = os.path.join("build", "man", "git-vaultmesh.1")
os.makedirs(os.path.dirname(os.path.join(here, man)), exist_ok=True)
with open(os.path.join(here, man), "w", encoding="utf-8") as fh:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")  # reproducible builds
    date = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).date().isoformat() if epoch else None
    fh.write(render(build_parser(), date))

setup(data_files=[("share/man/man1", [man])])
