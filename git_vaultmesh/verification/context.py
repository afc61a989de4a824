"""What every check reads: the entries under judgement, their policy timeline, the scope, and the report.

A Context is built either from a repository (`verify`, `doctor`, `pull`) or from a proof bundle
(`check-proof`); the entry checks cannot tell which, so both run exactly the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .. import ledger
from ..entry import Entry
from ..policy import Policy, Timeline, pinned_keys
from .report import Report

if TYPE_CHECKING:
    from ..git import Repo
    from ..signing import Verifier


@dataclass
class Options:
    target: str | None = None
    all: bool = False
    artifacts: Sequence[str] = ()
    trust_root: str | None = None
    allow: frozenset[str] = frozenset()
    remember: bool = True  # store the verified checkpoint for rollback detection
    log_ref: str = ledger.REF_LOG  # pull verifies a fetched copy before adopting it
    subjects: bool = True  # tags, history, tree digests, artifacts (pull checks the log alone)
    # entries and checkpoints below this size were verified before and the caller has checked that the log is
    # consistent with that verified prefix (federation: the last witnessed checkpoint): their signatures are
    # taken as claimed, policy entries excepted (the timeline is always verified)
    known_size: int = 0
    # the log is ours or a replica of ours, so this clone's vaultmesh.trustRoot pins it; a federation peer's log
    # has its own trust root (trust_root, or trust on first use), never ours
    own_log: bool = True


@dataclass
class Scope:
    """Which entries a verdict covers. `everything`: the whole log (verify --all, a bundle's entries).
    Otherwise the entries naming the target (`direct`), what refers to them (cosigns, timestamps) and the
    chain of base releases their histories build on; policy entries are always in scope."""

    everything: bool
    positions: set[int] = field(default_factory=set)
    direct: set[int] = field(default_factory=set)
    ref: str | None = None

    def covers(self, seq: int, e: Entry | None) -> bool:
        return self.everything or seq in self.positions or (e is not None and e.type == "policy")


@dataclass
class Context:
    report: Report
    opts: Options
    carried: dict[int, Entry]  # the entries under judgement (a whole log, or what a bundle carries)
    lines: dict[int, bytes]  # their lines (an unparseable entry's raw line too, for a whole log)
    size: int  # the log size the checkpoint commits to
    scope: Scope
    repo: Repo | None = None
    view: ledger.View | None = None
    timeline: Timeline | None = None
    trust_root: str | None = None
    _verifier: Verifier | None = None
    missing_subjects: set[str] = field(default_factory=set)

    @property
    def log_id(self) -> str | None:
        return self.timeline.log_id if self.timeline is not None else None

    def verifier(self) -> Verifier:
        """One Verifier for the whole verdict, knowing every key copy that the policy entries pin."""
        if self._verifier is None:
            from ..signing import Verifier

            self._verifier = Verifier(pinned_keys(self.carried.values()))
        return self._verifier

    def policy_at(self, seq: int) -> Policy | None:
        return self.timeline.at(seq) if self.timeline is not None else None

    def close(self) -> None:
        if self._verifier is not None:
            self._verifier.close()


def where(seq: int, e: Entry | None) -> str:
    return f"entry #{seq}" + (f" ({e.id[:12]}, {e.type})" if e is not None else "")


class Rule(Protocol):
    """A check: reads the context, adds its named results (each failure with its own code) to the report."""

    def __call__(self, ctx: Context) -> None: ...


def all_of(ctx: Context, rules: Sequence[Rule]) -> None:
    """Run every rule; a verdict is the conjunction of what they report (an empty report is not a pass)."""
    for rule in rules:
        rule(ctx)
