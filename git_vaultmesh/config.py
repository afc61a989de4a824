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


def loads_toml(text: str) -> dict[str, Any]:
    """tomllib.loads, imported when a .vaultmesh.toml is there to read (it costs start-up time otherwise)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads(text)


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
    "buildcommand": Setting(str, "(none)", "release build (sh -c) that covenant II runs twice in clean checkouts of the tag"),
    "buildoutput": Setting(str, "dist", "directory, relative to the checkout, where the build writes its artifacts"),
    "buildtimeout": Setting(float, "600", "seconds one run of the build command may take"),
    "releasetags": Setting(str, "v*", "glob(s) naming release tags, space-separated: pre-push and pre-receive check them"),
    "autorecord": Setting(str, "false", "true: the reference-transaction hook records new release tags; or a glob of its own"),
    "verifypush": Setting(bool, "true", "false turns the pre-push checks off (the server's pre-receive still applies)", True),
    "peer.NAME.url": Setting(str, "(none)", "where federation fetches peer NAME's ledger refs (operational only)"),
    "peer.NAME.trustroot": Setting(str, "(none)", "fingerprint of peer NAME's genesis signer", True),
    "component": Setting(str, "origin URL's last part, else the folder",
                         "component name `record` writes into receipts (`--component` overrides it)"),
}


def schema_key(key: str) -> str | None:
    """The schema entry a canonical key (without `vaultmesh.`) falls under, or None if unknown."""
    key = key.lower()
    if key in SCHEMA:
        return key
    parts = key.split(".")
    if len(parts) >= 3 and parts[0] in ("tsa", "peer") and f"{parts[0]}.NAME.{parts[-1]}" in SCHEMA:
        return f"{parts[0]}.NAME.{parts[-1]}"
    return None


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0", ""})


class Settings:
    """The value git-vaultmesh reads for each setting: git config's vaultmesh.* (the last value wins), else
    `.vaultmesh.toml`, validated. `git_keys`: the vaultmesh.* values already read (doctor reads every setting
    with its origin in one git process), so they are not asked again."""

    def __init__(self, repo: Repo, git_keys: dict[str, str] | None = None) -> None:
        self.repo = repo
        self._toml: dict[str, Any] | None = None
        self._git: dict[str, str] | None = git_keys

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
                        data = loads_toml(path.read_text(encoding="utf-8"))
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
        value = self.get(key)  # validated: a float in range
        return default if value is None else float(value)

    def signing_format(self) -> str:
        fmt = self.get("signingformat")
        return str(fmt if fmt is not None else validated("signingformat", self.repo.config_get("gpg.format") or "openpgp"))

    def tsa_url(self, name: str) -> str | None:
        """URL of policy TSA `name`: git config vaultmesh.tsa.<name>.url (the subsection keeps its case), else
        `url` in the table [vaultmesh.tsa.<name>] of .vaultmesh.toml. Operational only: trust is the policy's."""
        url = self._git_value(f"vaultmesh.tsa.{name}.url")
        if url is None and self.repo.work_tree is not None:
            path = Path(self.repo.work_tree) / ".vaultmesh.toml"
            if path.exists():
                self._file()  # validates the syntax
                data = loads_toml(path.read_text(encoding="utf-8"))
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
        return default if value is None else bool(value)

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
        data = loads_toml(path.read_text(encoding="utf-8"))
        table = data.get("vaultmesh", data).get(name, {})
        return table if isinstance(table, dict) else {}

    def problems(self) -> list[str]:
        """Every vaultmesh.* setting that is unknown or does not read as its type (the pre-commit schema check)."""
        out: list[str] = []
        values: dict[str, Any] = {k[len("vaultmesh."):]: v for k, v in self.git_keys().items()}
        for key, value in self._file().items():
            values.setdefault(key, value)
        for key in sorted(values):
            out.extend(_problem(key, values[key]))
        return out

    def signing_key_name(self) -> str | None:
        return self.get("signingkey") or self.repo.config_get("user.signingkey")


def toml_problems(text: str) -> list[str]:
    """What is wrong with a .vaultmesh.toml text (the staged one, in the pre-commit hook)."""
    try:
        data = loads_toml(text)
    except ValueError as exc:
        return [f"not valid TOML: {exc}"]
    section = data.get("vaultmesh", data)
    if not isinstance(section, dict):
        return ["`vaultmesh` is not a table"]
    out: list[str] = []
    for key, value in section.items():
        if isinstance(value, dict):
            if str(key).lower() not in ("tsa", "peer"):
                out.append(f"[vaultmesh.{key}] is not a table git-vaultmesh knows")
            continue
        out.extend(_problem(str(key), value))
    return out


def _problem(key: str, value: Any) -> list[str]:
    if schema_key(key) is None:
        return [f"vaultmesh.{key} is not a setting git-vaultmesh knows (typo?)"]
    try:
        validated(key, value)
    except VaultMeshError as exc:
        return [exc.cause]
    return []


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
    return str(validated(setting, value if value is not None else ""))


_FPR = frozenset("0123456789ABCDEF")
# how the docs and hints spell each key (git itself compares them case-insensitively)
_SPELLING = {k.lower(): k for k in ("signingKey", "signingFormat", "tsaTimeout", "tsaJobs", "gpgTimeout",
                                     "buildCommand", "buildOutput", "buildTimeout", "releaseTags", "autoRecord",
                                     "verifyPush", "trustRoot", "component")}
_TRUST_ROOTS = ("trustroot", "peer.NAME.trustroot")


def validated(key: str, value: Any) -> Any:
    """The value of setting `key` converted to its schema type, or VM-CONFIG-INVALID naming the setting. The one
    place a setting's shape is judged (Settings.get, `config check`, the hooks' schema check, the start-up refusal
    of a malformed security setting, --trust-root): an empty or malformed security value must never fall back to
    a weaker mode (an empty trust root is not "no trust root"). None = not set at all.

    A trust root is an OpenPGP fingerprint (40 or 64 hex digits, spaces allowed, returned upper-case) or an SSH
    key fingerprint (SHA256:<43 base64 characters>)."""
    if value is None:
        return None
    short = key[len("vaultmesh."):] if key.lower().startswith("vaultmesh.") else key
    parts = short.split(".")
    parts[-1] = _SPELLING.get(parts[-1].lower(), parts[-1])
    shown = key if key.startswith("--") else "vaultmesh." + ".".join(parts)
    name = "trustroot" if key == "--trust-root" else (schema_key(short) or short.lower())
    setting = SCHEMA.get(name)
    typ = setting.type if setting else str
    if name in _TRUST_ROOTS:
        text = value.strip() if isinstance(value, str) else ""
        compact = text.replace(" ", "").upper()
        if compact and set(compact) <= _FPR and len(compact) in (40, 64):
            return compact
        if text.startswith("SHA256:") and len(text) == 50:
            return text
        raise VaultMeshError("VM-CONFIG-INVALID", f"{shown} = {str(value)[:80]!r} is not a key fingerprint",
                             f"set {shown} to the genesis signer's full fingerprint (40/64 hex digits or SHA256:…); "
                             "an empty value is refused, never treated as unset")
    if typ is bool:
        text = str(value).strip().lower()
        if value is True or (not isinstance(value, bool) and text in _TRUE):
            return True
        if value is False or (not isinstance(value, bool) and text in _FALSE):
            return False
        raise VaultMeshError("VM-CONFIG-INVALID", f"{shown} = {value!r} is not a boolean",
                             f"git config {shown} true|false")
    try:
        if typ is str and not isinstance(value, str):
            raise TypeError
        if typ in (int, float) and isinstance(value, bool):
            raise TypeError
        if typ is int and isinstance(value, float):
            raise TypeError
        result = typ(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float(10**400), int(inf)
        raise VaultMeshError("VM-CONFIG-INVALID", f"{shown} = {value!r} is not a {typ.__name__}",
                             f"git config {shown} <{typ.__name__}>") from None
    if name == "signingformat" and result not in ("openpgp", "ssh"):
        raise VaultMeshError("VM-CONFIG-INVALID", f"signing format {result!r} is not supported",
                             "set vaultmesh.signingFormat to openpgp or ssh")
    if typ is float and not 0 < result <= (86400 if name == "buildtimeout" else 3600):
        raise VaultMeshError("VM-CONFIG-INVALID", f"{shown} = {value} is out of range",
                             "use a number of seconds between 0 and 3600 (a build: 86400)")
    if name == "tsajobs" and not 1 <= result <= 256:
        raise VaultMeshError("VM-CONFIG-INVALID", f"{shown} = {value} is out of range",
                             "use a whole number between 1 and 256")
    return result


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
