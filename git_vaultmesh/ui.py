"""Output helpers shared by the verbs: JSON/YAML on stdout, progress and warnings on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def print_yaml(obj: Any) -> None:
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(obj, sys.stdout)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def note(message: str) -> None:
    print(message, file=sys.stderr)


def report(as_json: bool, data: Any, lines: list[str]) -> int:
    """A verb's result: `data` as JSON with --json, else the human lines; exit status 0."""
    if as_json:
        print_json(data)
    else:
        print("\n".join(lines))
    return 0
