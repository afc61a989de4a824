"""What a verdict is made of: named checks, each passed or failed with a stable code, a detail and a hint.

`Report.ok` is true only when at least one check ran and none failed: a report with no checks is not a pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CODES, VaultMeshError, hint_for


@dataclass
class Check:
    check: str
    ok: bool
    code: str | None
    detail: str
    hint: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "code": self.code, "detail": self.detail, "hint": self.hint}


@dataclass
class Report:
    trust: str = "tofu"
    checks: list[Check] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)  # allowances the caller gave (--allow-pending)
    pending: list[str] = field(default_factory=list)  # entries accepted as pending under such an allowance
    log_id: str | None = None
    size: int = 0
    root: bytes = b""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def passed(self, check: str, detail: str) -> None:
        self.checks.append(Check(check, True, None, detail, None))

    def failed(self, check: str, code: str, detail: str, hint: str | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unregistered error code {code!r}")
        self.checks.append(Check(check, False, code, detail, hint or hint_for(code)))

    def error(self, check: str, exc: VaultMeshError) -> None:
        self.failed(check, exc.code, exc.cause, exc.hint)

    def codes(self) -> list[str]:
        return [c.code for c in self.checks if c.code]

    def has_failed(self, check: str) -> bool:
        return any(c.check == check and not c.ok for c in self.checks)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "trust": self.trust, "checks": [c.as_json() for c in self.checks]}
        if self.allowed:
            out["allowed"] = self.allowed
        if self.pending:
            out["pending"] = self.pending
        return out


def summarize(report: Report) -> Iterable[str]:
    for c in report.checks:
        mark = "ok  " if c.ok else "FAIL"
        yield f"{mark} {c.check}: {c.detail}" + (f" [{c.code}]" if c.code else "")
        if not c.ok and c.hint:
            yield f"     hint: {c.hint}"
