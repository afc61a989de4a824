"""`init`: the genesis policy entry. Its signer becomes this clone's trust root."""

from __future__ import annotations

import argparse
import re

from .. import ledger
from ..config import signing_key
from ..entry import Entry, new_log_id, now_rfc3339, sign_body
from ..errors import VaultMeshError
from ..git import Repo
from ..policy import WILDCARD, Policy, PolicySigner
from ..ui import print_json


def _default_name(public_key: str, fmt: str) -> str:
    if fmt == "ssh":
        parts = public_key.split()
        comment = parts[2] if len(parts) > 2 else "signer"
        base = comment.split("@")[0]
    else:
        base = "signer"
    name = re.sub(r"[^A-Za-z0-9._-]", "-", base).strip("-.") or "signer"
    return name[:64]


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    key = signing_key(repo)
    name = args.name or _default_name(key.public_key, key.format)
    signer = PolicySigner(name, key.format, key.fingerprint, key.public_key, (WILDCARD,))
    policy = Policy((signer,), {WILDCARD: 1})
    body = {"type": "policy", "log": new_log_id(), "recorded_at": now_rfc3339(),
            "message": "genesis", **policy.body_fields()}
    Policy.from_body(body)  # the genesis must pass the same checks verify applies
    entry = sign_body(body, key)

    def only_if_empty(repo_: Repo, head: ledger.Head) -> list[Entry]:
        if head.commit is not None:
            raise VaultMeshError("VM-ALREADY-INITIALIZED", f"{ledger.REF_LOG} already exists ({head.commit[:12]})",
                                 "use `git vaultmesh policy` to change the policy of an existing ledger")
        return [entry]

    result = ledger.append(repo, key, only_if_empty)
    repo.config_set("vaultmesh.trustRoot", key.fingerprint)
    if args.json:
        print_json({"ok": True, "log": body["log"], "entry": entry.id, "commit": result.commit,
                    "trust_root": key.fingerprint, "signer": name})
    else:
        print(f"initialised ledger {body['log']} in {ledger.REF_LOG}")
        print(f"genesis signer {key.format} {key.fingerprint} (named {name!r} in the policy) pinned as vaultmesh.trustRoot")
    return 0
