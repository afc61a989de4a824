"""Fuzzing every parser with hypothesis: any input gives a result or a clean, coded VaultMeshError.

Targets (defined in benchmarks/reliability.py, which runs them at 500 examples each for the figures):
entry.parse_line on random bytes, on mutated real lines and on generated bodies (accepted means canonical);
the JCS round trip; check_proof.check on structurally mutated real bundles; tsa.parse_response on random
bytes and tsa.verify_token on mutated real tokens (only VM-TSA-* codes); ledger.parse_checkpoint (accepted
means canonical); `.vaultmesh.toml` with random content (a value or VM-CONFIG-INVALID); import_v4.parse on mutated v4.1
receipts (a parsed receipt whose fields make an entry body, or VM-IMPORT-MALFORMED). The seeds are real: a
ledger with two releases made by the CLI, a proof bundle from `prove`, a token from the RFC 3161 signer.
Examples are derandomized so a CI run is reproducible; the benchmark explores with fresh randomness.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .figures import rel

# examples per target in the test run (each runs gpg or git per example where it says so)
EXAMPLES = {
    "entry.parse_line: random bytes": 300,
    "entry.parse_line: mutated real lines": 300,
    "entry.parse_line: generated bodies": 300,
    "JCS (rfc8785) round trip": 300,
    "check_proof.check: mutated bundles": 200,  # gpgv per example once the shape is right
    "tsa.parse_response: random bytes": 300,
    "tsa.verify_token: mutated real tokens": 300,
    "ledger.parse_checkpoint": 300,
    ".vaultmesh.toml (config)": 200,  # git config per example
    "v4.1 importer": 300,
}


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    ctx = rel.make_fuzz_context(tmp_path_factory.mktemp("fuzz"))
    try:
        yield {t.name: t for t in rel.fuzz_targets(ctx)}
    finally:
        ctx.close()


def test_every_target_is_run(targets: dict[str, Any]) -> None:
    assert set(targets) == set(EXAMPLES)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_fuzz(targets: dict[str, Any], name: str) -> None:
    res = rel.run_target(targets[name], EXAMPLES[name], derandomize=True)
    assert res.failure is None, f"{name}: {res.failure}"
    assert res.examples >= EXAMPLES[name] * 0.9, f"{name}: only {res.examples} examples ran ({res.outcomes})"
    assert len(res.outcomes) >= 2 or name.endswith("random bytes"), f"{name}: one outcome only {res.outcomes}"
