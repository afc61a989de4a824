"""Small JSON files under the git dir that remember derived, local state (the checkpoint verified last, a
clean doctor, the pre-commit hook's judgement, the peers' last verdicts, what `install` placed). None of them
is ever trusted for a verdict: losing one costs time, never safety. One reading and one writing for all."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def read(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object in `path`; None when it is absent, unreadable, not JSON or not an object."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write(path: str | os.PathLike[str], data: Mapping[str, Any], *, indent: int | None = None,
          sort_keys: bool = False) -> None:
    """Write atomically: a temporary file of our own in the same directory, then a rename. A crash keeps the old
    file, and two processes writing at once never rename each other's half-written file. Raises OSError."""
    import tempfile

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(dict(data), fh, indent=indent, sort_keys=sort_keys)
            if indent is not None:
                fh.write("\n")
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
