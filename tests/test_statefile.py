"""The one reading and writing of the small JSON state files under the git dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from git_vaultmesh import statefile


def test_round_trip_and_what_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "vaultmesh" / "state.json"
    assert statefile.read(path) is None  # absent
    statefile.write(path, {"log": "a", "size": 3}, indent=2)
    assert statefile.read(path) == {"log": "a", "size": 3}
    assert path.read_text(encoding="utf-8").endswith("}\n")
    for text in ("not json", "[1, 2]", ""):
        path.write_text(text, encoding="utf-8")
        assert statefile.read(path) is None
    assert os.listdir(path.parent) == ["state.json"]  # no temporary file left behind


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "vaultmesh" / "state.json"
    statefile.write(path, {"v": 1})
    with pytest.raises(TypeError):
        statefile.write(path, {"v": object()})  # not JSON: fails while writing the temporary file
    assert statefile.read(path) == {"v": 1}
    assert os.listdir(path.parent) == ["state.json"]
