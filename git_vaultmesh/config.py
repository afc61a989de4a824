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
    "tsajobs": (int, "TSA requests in flight at once when timestamping many entries (default 16)"),
    "gpgtimeout": (float, "seconds to wait for gpg/gpg-agent or ssh-keygen"),
    "buildcommand": (str, "release build (sh -c) that covenant II runs twice in clean checkouts of the tag"),
    "buildoutput": (str, "directory, relative to the checkout, where the build writes its artifacts (default dist)"),
    "buildtimeout": (float, "seconds one run of the build command may take (default 600)"),
    "releasetags": (str, "glob(s) naming release tags, space-separated (default v*): pre-push and pre-receive check them"),
    "autorecord": (str, "true: the reference-transaction hook records new release tags; or a glob of its own"),
    "verifypush": (str, "false turns the pre-push checks off (the server's pre-receive still applies)"),
}

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0", ""})


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
        typ = SCHEMA.get(key, (str, ""))[0]
        try:
            return typ(raw)
        except (TypeError, ValueError, OverflowError):  # OverflowError: float(10**400), int(inf)
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

    def flag(self, key: str, default: bool) -> bool:
        """A boolean setting as git spells booleans (true/yes/on/1, false/no/off/0)."""
        value = self.get(key)
        if value is None:
            return default
        text = str(value).strip().lower()
        if text in _TRUE or value is True:
            return True
        if text in _FALSE or value is False:
            return False
        raise VaultMeshError("VM-CONFIG-INVALID", f"vaultmesh.{key} = {value!r} is not a boolean",
                             f"git config vaultmesh.{key} true|false")

    def release_tag_globs(self) -> list[str]:
        """Globs (fnmatch, matched against the tag name without refs/tags/) that make a tag a release."""
        value = self.get("releasetags")
        globs = str(value).replace(",", " ").split() if value is not None else ["v*"]
        return globs or ["v*"]

    def auto_record_globs(self) -> list[str]:
        """The tags the reference-transaction hook records: none unless vaultmesh.autoRecord is set."""
        value = self.get("autorecord")
        if value is None or str(value).strip().lower() in _FALSE:
            return []
        if str(value).strip().lower() in _TRUE:
            return self.release_tag_globs()
        return str(value).replace(",", " ").split()

    def peers(self) -> dict[str, str]:
        """Federation peers: git config vaultmesh.peer.<name>.url, else [vaultmesh.peer.<name>] url = … in
        .vaultmesh.toml. Operational only (where to fetch); what a peer's log is worth is for the checks."""
        found: dict[str, str] = {}
        for key, value in self.git_keys().items():
            if key.startswith("vaultmesh.peer.") and key.endswith(".url"):
                found[key[len("vaultmesh.peer."):-len(".url")]] = value
        for name, table in self._toml_table("peer").items():
            url = table.get("url") if isinstance(table, dict) else None
            if not isinstance(url, str):
                raise VaultMeshError("VM-CONFIG-INVALID", f".vaultmesh.toml: peer {name} has no url string",
                                     f"[vaultmesh.peer.{name}] url = \"https://…\"")
            found.setdefault(str(name), url)
        return found

    def _toml_table(self, name: str) -> dict[str, Any]:
        if self.repo.work_tree is None:
            return {}
        path = Path(self.repo.work_tree) / ".vaultmesh.toml"
        if not path.exists():
            return {}
        self._file()  # validates the syntax
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        table = data.get("vaultmesh", data).get(name, {})
        return table if isinstance(table, dict) else {}

    def problems(self) -> list[str]:
        """Every vaultmesh.* setting that is unknown or does not read as its type (the pre-commit schema check)."""
        out: list[str] = []
        keys = {k[len("vaultmesh."):] for k in self.git_keys() if k.count(".") == 1}
        keys |= set(self._file())
        for key in sorted(keys):
            if key not in SCHEMA:
                out.append(f"vaultmesh.{key} is not a setting git-vaultmesh knows (typo?)")
                continue
            try:
                self.get(key)
            except VaultMeshError as exc:
                out.append(exc.cause)
        try:
            self.flag("verifypush", True)
        except VaultMeshError as exc:
            out.append(exc.cause)
        return out

    def signing_key_name(self) -> str | None:
        return self.get("signingkey") or self.repo.config_get("user.signingkey")


def toml_problems(text: str) -> list[str]:
    """What is wrong with a .vaultmesh.toml text (the staged one, in the pre-commit hook)."""
    try:
        data = tomllib.loads(text)
    except ValueError as exc:
        return [f"not valid TOML: {exc}"]
    section = data.get("vaultmesh", data)
    if not isinstance(section, dict):
        return ["`vaultmesh` is not a table"]
    out = []
    for key, value in section.items():
        low = str(key).lower()
        if isinstance(value, dict):
            if low not in ("tsa", "peer"):
                out.append(f"[vaultmesh.{key}] is not a table git-vaultmesh knows")
            continue
        if low not in SCHEMA:
            out.append(f"{key} is not a setting git-vaultmesh knows (typo?)")
            continue
        typ = SCHEMA[low][0]
        try:
            typ(value)
        except (TypeError, ValueError, OverflowError):
            out.append(f"{key} = {value!r} is not a {typ.__name__}")
    return out


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


def require_fingerprint(value: str | None, setting: str) -> str:
    """A trust root that must be given: `validated`, and absent is refused too."""
    got = validated(setting, value if value is not None else "")
    assert got is not None
    return got


_FPR = frozenset("0123456789ABCDEF")


def validated(key: str, value: str | None) -> str | None:
    """A security setting's value, or VM-CONFIG-INVALID naming the setting: an empty or malformed value must
    never fall back to a weaker mode (an empty trust root is not "no trust root"). None = not set at all.

    trustroot: an OpenPGP fingerprint (40 or 64 hex digits, spaces allowed) or an SSH key fingerprint
    (SHA256:<43 base64 characters>)."""
    if value is None:
        return None
    name = key if "." in key or key.startswith("--") else f"vaultmesh.{key}"
    low = name.lower()
    if low in ("vaultmesh.trustroot", "--trust-root") or (low.startswith("vaultmesh.peer.") and low.endswith(".trustroot")):
        text = value.strip()
        compact = text.replace(" ", "").upper()
        if compact and set(compact) <= _FPR and len(compact) in (40, 64):
            return compact
        if text.startswith("SHA256:") and len(text) == 50:
            return text
        raise VaultMeshError("VM-CONFIG-INVALID",
                             f"{name} = {value[:80]!r} is not a key fingerprint",
                             f"set {name} to the genesis signer's full fingerprint (40/64 hex digits or SHA256:…); "
                             "an empty value is refused, never treated as unset")
    return value
