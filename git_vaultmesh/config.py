"""Operational settings: `git config vaultmesh.*` first, then `.vaultmesh.toml` at the work-tree root.

Nothing here is trusted for verification: trust lives only in the log's policy entries. These settings say
how to do things (which key signs, where TSAs are, timeouts), never what to accept.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .errors import VaultMeshError
from .git import Repo

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# key -> (type, meaning); validated on read so a typo fails loudly instead of silently defaulting
SCHEMA: dict[str, tuple[type, str]] = {
    "signingkey": (str, "key that signs entries and checkpoints (gpg key id/fingerprint, or ssh key path)"),
    "signingformat": (str, "openpgp or ssh (defaults from gpg.format)"),
    "trustroot": (str, "fingerprint of the genesis signer this clone pins"),
    "tsatimeout": (float, "seconds to wait for a TSA before the entry is left pending"),
    "gpgtimeout": (float, "seconds to wait for gpg/gpg-agent or ssh-keygen"),
}


class Settings:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self._toml: dict[str, Any] | None = None

    def _file(self) -> dict[str, Any]:
        if self._toml is None:
            self._toml = {}
            if self.repo.work_tree is not None:
                path = Path(self.repo.work_tree) / ".vaultmesh.toml"
                if path.exists():
                    try:
                        data = tomllib.loads(path.read_text(encoding="utf-8"))
                    except (OSError, ValueError) as exc:
                        raise VaultMeshError("VM-CONFIG-INVALID", f".vaultmesh.toml: {exc}",
                                             "fix the TOML syntax or remove the file") from None
                    section = data.get("vaultmesh", data)
                    self._toml = {str(k).lower(): v for k, v in section.items() if not isinstance(v, dict)}
        return self._toml

    def get(self, key: str) -> Any:
        key = key.lower()
        raw: Any = self.repo.config_get(f"vaultmesh.{key}")
        if raw is None:
            raw = self._file().get(key)
        if raw is None:
            return None
        typ = SCHEMA.get(key, (str, ""))[0]
        try:
            return typ(raw)
        except (TypeError, ValueError):
            raise VaultMeshError("VM-CONFIG-INVALID", f"vaultmesh.{key} = {raw!r} is not a {typ.__name__}",
                                 f"git config vaultmesh.{key} <{typ.__name__}>") from None

    def timeout(self, key: str, default: float) -> float:
        value = self.get(key)
        if value is None:
            return default
        if not 0 < float(value) <= 3600:
            raise VaultMeshError("VM-CONFIG-INVALID", f"vaultmesh.{key} = {value} is out of range",
                                 "use a number of seconds between 0 and 3600")
        return float(value)

    def signing_format(self) -> str:
        fmt = self.get("signingformat") or self.repo.config_get("gpg.format") or "openpgp"
        if fmt == "openpgp":
            return "openpgp"
        if fmt == "ssh":
            return "ssh"
        raise VaultMeshError("VM-CONFIG-INVALID", f"signing format {fmt!r} is not supported",
                             "set vaultmesh.signingFormat to openpgp or ssh")

    def signing_key_name(self) -> str | None:
        return self.get("signingkey") or self.repo.config_get("user.signingkey")


def signing_key(repo: Repo) -> Any:
    """Resolve the key `record`/`init` sign with (signing.SigningKey)."""
    from .signing import resolve_signing_key

    settings = Settings(repo)
    name = settings.signing_key_name()
    if not name:
        raise VaultMeshError("VM-NO-SIGNING-KEY", "no signing key configured",
                             "git config vaultmesh.signingKey <gpg fingerprint> (or user.signingkey)")
    fmt = settings.signing_format()
    return resolve_signing_key(fmt, name, timeout=settings.timeout("gpgtimeout", 30.0))  # type: ignore[arg-type]
