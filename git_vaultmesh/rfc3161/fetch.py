"""Fetching RFC 3161 tokens in bounded parallel batches.

`fetch` asks each (data, TSA) for a token and checks it with verify_token against the policy's trust (nonce
included) before returning it: an appended token is never withdrawn, so a bad one must not get in. This module
imports nothing heavy at import time (tsa.py is loaded when a fetch starts), so commands can describe
endpoints without paying for the RFC 3161 client.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import VaultMeshError

if TYPE_CHECKING:
    from .tsa import TokenInfo, TsaTrust

GIVE_UP_AFTER = 3  # failures in a row after which a TSA is taken as down for the rest of a batch


@dataclass(frozen=True)
class Endpoint:
    """A policy TSA (name, CA PEM, optional SPKI pin: the trust) and where to reach it (operational)."""

    name: str
    url: str
    ca_cert: str
    spki_pin: str | None = None

    def trust(self) -> TsaTrust:
        from .tsa import TsaTrust

        return TsaTrust(self.name, self.ca_cert, self.spki_pin)


@dataclass(frozen=True)
class Fetched:
    tsa: str
    tsr: bytes | None
    error: VaultMeshError | None
    info: TokenInfo | None = None  # set once the token verified
    nonce: int | None = None  # the nonce requested (verify_fetched checks it)


def fetch(jobs: Sequence[tuple[bytes, Endpoint]], *, timeout: float, workers: int,
          verify: bool = True) -> list[Fetched]:
    """A verified token (or the reason for none) for each (data, TSA), at most `workers` requests in flight.
    With verify=False the tokens are only parsed (status, imprint, nonce): the caller must pass them through
    verify_fetched before anything is appended.

    A TSA that failed GIVE_UP_AFTER times in a row is not asked again within the batch: a dead TSA costs a
    timeout per worker, not one per entry."""
    from .tsa import request_token, verify_token

    lock = threading.Lock()
    streak: dict[str, int] = {}
    down: dict[str, VaultMeshError] = {}

    def one(job: tuple[bytes, Endpoint]) -> Fetched:
        data, ep = job
        with lock:
            gave_up = down.get(ep.name)
        if gave_up is not None:
            return Fetched(ep.name, None, gave_up)
        try:
            tsr, nonce = request_token(ep.url, data, timeout)
            info = verify_token(tsr, data, ep.trust(), nonce) if verify else None
        except VaultMeshError as exc:
            with lock:
                streak[ep.name] = streak.get(ep.name, 0) + 1
                if streak[ep.name] >= GIVE_UP_AFTER:
                    down.setdefault(ep.name, exc)
            return Fetched(ep.name, None, exc)
        with lock:
            streak[ep.name] = 0
        return Fetched(ep.name, tsr, None, info, nonce)

    if len(jobs) <= 1:
        return [one(j) for j in jobs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        return list(pool.map(one, jobs))


def verify_fetched(jobs: Sequence[tuple[bytes, Endpoint]], fetched: Sequence[Fetched]) -> list[Fetched]:
    """Each token fetched with verify=False, verified against its TSA's policy trust (nonce included); a
    token that fails becomes its error."""
    from .tsa import verify_token

    out: list[Fetched] = []
    for (data, ep), got in zip(jobs, fetched, strict=True):
        if got.tsr is None or got.info is not None:
            out.append(got)
            continue
        try:
            info = verify_token(got.tsr, data, ep.trust(), got.nonce)
        except VaultMeshError as exc:
            out.append(Fetched(got.tsa, None, exc))
            continue
        out.append(Fetched(got.tsa, got.tsr, None, info, got.nonce))
    return out
