"""Operational settings: `git config vaultmesh.*` first, then `.vaultmesh.toml` at the work-tree root.

Nothing here is trusted for verification: trust lives only in the log's policy entries. These settings say
how to do things (which key signs, where TSAs are, timeouts), never what to accept.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NamedTuple

from .errors import VaultMeshError
from .git import Repo

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

class Setting(NamedTuple):
    type: type
    default: str
    meaning: str
    security: bool = False  # a malformed value makes every verb refuse (exit 2) instead of guessing


# The one schema of every vaultmesh.* key (git config) and [vaultmesh] key (.vaultmesh.toml), lower-case as git
# canonicalises them. `tsa.NAME.url` stands for every TSA subsection. docs/settings.md is generated from it.
SCHEMA: dict[str, Setting] = {
    "signingkey": Setting(str, "user.signingkey",
                          "key that signs entries and checkpoints (gpg key id/fingerprint, or ssh key path)", True),
    "signingformat": Setting(str, "gpg.format, else openpgp", "openpgp or ssh", True),
    "trustroot": Setting(str, "(none: trust on first use)", "fingerprint of the genesis signer this clone pins", True),
    "tsatimeout": Setting(float, "10", "seconds to wait for a TSA before the entry is left pending"),
    "tsajobs": Setting(int, "16", "TSA requests in flight at once when timestamping many entries"),
    "gpgtimeout": Setting(float, "30", "seconds to wait for gpg/gpg-agent or ssh-keygen"),
    "tsa.NAME.url": Setting(str, "(none)", "RFC 3161 URL of the policy TSA NAME (trust stays in the policy)"),
}


def schema_key(key: str) -> str | None:
    """The schema entry a canonical key (without `vaultmesh.`) falls under, or None if unknown."""
    key = key.lower()
    if key in SCHEMA:
        return key
    parts = key.split(".")
    if len(parts) >= 3 and parts[0] == "tsa" and parts[-1] == "url":
        return "tsa.NAME.url"
    return None


def validated(key: str, value: Any) -> Any:
    """The value of setting `key` converted to its schema type, or VM-CONFIG-INVALID naming the setting.
    The one place a setting's shape is judged: Settings.get, `config check` and --trust-root all use it."""
    name = schema_key(key) or key.lower()
    typ = SCHEMA[name].type if name in SCHEMA else str
    try:
        if typ is str and not isinstance(value, str):
            raise TypeError
        if typ is int and isinstance(value, (bool, float)):
            raise TypeError
        result = typ(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float(10**400), int(inf)
        raise VaultMeshError("VM-CONFIG-INVALID", f"vaultmesh.{key} = {value!r} is not a {typ.__name__}",
                             f"git config vaultmesh.{key} <{typ.__name__}>") from None
    if name == "trustroot":
        fpr = result.replace(" ", "")
        if fpr.startswith("SHA256:") and len(fpr) > 7:  # an SSH signer's key fingerprint
            return fpr
        if not (len(fpr) in (40, 64) and all(c in "0123456789abcdefABCDEF" for c in fpr)):
            raise VaultMeshError("VM-CONFIG-INVALID", f"vaultmesh.trustRoot = {value!r} is not a fingerprint",
                                 "git config vaultmesh.trustRoot <40 or 64 hex digits, or SHA256:… of an SSH key>")
        return fpr.upper()
    if name == "signingformat" and result not in ("openpgp", "ssh"):
        raise VaultMeshError("VM-CONFIG-INVALID", f"signing format {result!r} is not supported",
                             "set vaultmesh.signingFormat to openpgp or ssh")
    if name in ("tsatimeout", "gpgtimeout") and not 0 < result <= 3600:
        raise VaultMeshError("VM-CONFIG-INVALID", f"vaultmesh.{key} = {value} is out of range",
                             "use a number of seconds between 0 and 3600")
    if name == "tsajobs" and not 1 <= result <= 256:
        raise VaultMeshError("VM-CONFIG-INVALID", f"vaultmesh.{key} = {value} is out of range",
                             "use a whole number between 1 and 256")
    return result


class Settings:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self._toml: dict[str, Any] | None = None
        self._git: dict[str, str] | None = None

    def git_keys(self) -> dict[str, str]:
        """Every vaultmesh.* git config value, read with ONE `git config --get-regexp` per Settings (not one git
        process per key); keys as git canonicalises them (section and name lower-case, subsection as written)."""
        if self._git is None:
            self._git = self.repo.config_get_all(r"^vaultmesh\.")
        return self._git

    def _git_value(self, key: str) -> str | None:
        return self.git_keys().get(key)

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
                    if not isinstance(section, dict):  # `vaultmesh = 1` or `[[vaultmesh]]`
                        raise VaultMeshError("VM-CONFIG-INVALID", ".vaultmesh.toml: `vaultmesh` is not a table",
                                             "put the settings under one [vaultmesh] table") from None
                    self._toml = {str(k).lower(): v for k, v in section.items() if not isinstance(v, dict)}
        return self._toml

    def get(self, key: str) -> Any:
        key = key.lower()
        raw: Any = self._git_value(f"vaultmesh.{key}")
        if raw is None:
            raw = self._file().get(key)
        if raw is None:
            return None
        return validated(key, raw)

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

    def tsa_url(self, name: str) -> str | None:
        """URL of policy TSA `name`: git config vaultmesh.tsa.<name>.url (the subsection keeps its case), else
        `url` in the table [vaultmesh.tsa.<name>] of .vaultmesh.toml. Operational only: trust is the policy's."""
        url = self._git_value(f"vaultmesh.tsa.{name}.url")
        if url is None and self.repo.work_tree is not None:
            path = Path(self.repo.work_tree) / ".vaultmesh.toml"
            if path.exists():
                self._file()  # validates the syntax
                data = tomllib.loads(path.read_text(encoding="utf-8"))
                tsas = data.get("vaultmesh", data).get("tsa", {})
                table = tsas.get(name, {}) if isinstance(tsas, dict) else {}
                url = table.get("url") if isinstance(table, dict) else None
        if url is not None and not isinstance(url, str):
            raise VaultMeshError("VM-CONFIG-INVALID", f"the URL of TSA {name} is not a string",
                                 f"git config vaultmesh.tsa.{name}.url https://…")
        return url or None

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


def settings_page() -> str:
    """docs/settings.md, generated from SCHEMA (`python -m git_vaultmesh.config > docs/settings.md`)."""
    rows = "".join(f"| `vaultmesh.{k}` | {s.type.__name__} | {s.default} | {'yes' if s.security else ''} | {s.meaning} |\n"
                   for k, s in SCHEMA.items())
    return ("# Settings\n\nOperational settings only: which key signs, where TSAs are, timeouts. Trust (signers,\n"
            "thresholds, TSA certificates) lives in the log's policy entries, never here.\n\n"
            "Each key is read from `git config vaultmesh.KEY` (any scope; `git -c` works), else from the\n"
            "`[vaultmesh]` table of `.vaultmesh.toml` at the work-tree root (`[vaultmesh.tsa.NAME]` for TSA URLs).\n"
            "`git vaultmesh config` lists each value and where it came from; `git vaultmesh config check`\n"
            "reports unknown keys and malformed values with file and line. A malformed *security* setting\n"
            "makes every verb refuse to run (exit 2, VM-CONFIG-INVALID naming the setting).\n\n"
            "| Key | Type | Default | Security | Meaning |\n|---|---|---|---|---|\n" + rows)


if __name__ == "__main__":  # pragma: no cover
    print(settings_page(), end="")
