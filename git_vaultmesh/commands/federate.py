"""`federate`: watch other teams' ledgers over plain git remotes (add, sync, status, merge).

A peer is another log with its own signers. `sync` fetches it, judges it with the same checks as our own log
(its policy, our pin of its trust root), requires it to extend what we witnessed of it before, and appends a
signed `witness` entry; `status` shows each peer and the merged view; `merge` records the merged view's root in
a signed `merge` entry. Nothing of ours changes when a peer fails: its rejected log is kept as evidence.
"""

from __future__ import annotations

import argparse
from typing import Any

from .. import federation, ledger
from ..config import require_fingerprint, signing_key
from ..entry import sign_body
from ..errors import VaultMeshError
from ..git import Repo
from ..ui import print_json


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    cmd = args.federate_command
    if cmd == "add":
        return _add(repo, args)
    if cmd == "sync":
        return _sync(repo, args)
    if cmd == "status":
        return _status(repo, args)
    if cmd == "merge":
        return _merge(repo, args)
    raise VaultMeshError("VM-USAGE", "no federate subcommand given", "git vaultmesh federate add | sync | status | merge")


def _add(repo: Repo, args: argparse.Namespace) -> int:
    federation.check_name(args.name)
    if repo.config_get(f"remote.{args.name}.url") is not None:
        raise VaultMeshError("VM-USAGE", f"{args.name!r} is a git remote of this repository (a replica of our own "
                             "ledger, integrated by `pull`)", "give the peer another name")
    if any(p.name == args.name for p in federation.peers(repo)):
        raise VaultMeshError("VM-USAGE", f"peer {args.name!r} is already configured",
                             f"change it with git config vaultmesh.peer.{args.name}.url URL")
    root = require_fingerprint(args.trust_root, "--trust-root") if args.trust_root is not None else None
    repo.config_set(f"{federation.PEER_KEY}{args.name}.url", args.url)
    if root:
        repo.config_set(f"{federation.PEER_KEY}{args.name}.trustRoot", root)
    trust = f"pinned to {root}" if root else "trust on first use: the first sync pins its genesis signer"
    if args.json:
        print_json({"ok": True, "peer": args.name, "url": args.url, "trust_root": root})
    else:
        print(f"peer {args.name}: {args.url} ({trust})")
    return 0


def _sync(repo: Repo, args: argparse.Namespace) -> int:
    if ledger.read_head(repo).commit is None:
        raise VaultMeshError("VM-NOT-INITIALIZED", f"{ledger.REF_LOG} does not exist",
                             "witness entries go into our own log: run `git vaultmesh init` first")
    chosen = [federation.peer(repo, n) for n in args.names] if args.names else federation.peers(repo)
    if not chosen:
        raise VaultMeshError("VM-PEER-UNKNOWN", "no peer is configured", "git vaultmesh federate add NAME URL")
    key = signing_key(repo)
    outcomes = [federation.sync(repo, key, p) for p in chosen]  # one unreachable peer never stops the others
    if args.json:
        print_json({"ok": all(o.ok for o in outcomes), "peers": [o.as_json() for o in outcomes]})
    else:
        for o in outcomes:
            tofu = " [trusted on first use]" if o.trust == "tofu" and o.ok else ""
            print(f"{'ok  ' if o.ok else 'FAIL'} {o.peer}: {o.detail}{tofu}" + (f" [{o.code}]" if o.code else ""))
            if not o.ok and o.hint:
                print(f"     hint: {o.hint}")
            if o.evidence:
                print(f"     evidence kept: {o.evidence}")
    return 0 if all(o.ok for o in outcomes) else 1


def status_data(repo: Repo) -> dict[str, Any]:
    state = federation.load_state(repo)
    ours = ledger.read_view(repo)
    seen = federation.witnessed(ours.entries, "us")
    merged = federation.merged_view(repo)
    rows = []
    for p in federation.peers(repo):
        mine = [s for s in seen if s.name == p.name]
        head = repo.ref_oid(p.ref)
        size = ledger.read_view(repo, p.ref).size if head else 0
        last = state.get(p.name, {})
        rows.append({
            "name": p.name, "url": p.url, "trust": "pinned" if p.trust_root else "tofu", "trust_root": p.trust_root,
            "witnessed": ({"size": mine[-1].size, "root": mine[-1].root.hex(), "entry": mine[-1].seq} if mine else None),
            "entries": size,
            "verdict": ({"ok": last.get("ok"), "code": last.get("code"), "detail": last.get("detail"),
                         "at": last.get("at")} if last else None),
            "divergence": last.get("code") if last and not last.get("ok") else None,
            "evidence": sorted(repo.refs(f"{ledger.REMOTES_PREFIX}{p.name}/evidence/")),
        })
    return {"merged": {"size": merged.size, "root": merged.root.hex()}, "peers": rows,
            "conflicts": merged.conflicts, "inputs": merged.inputs}


def _status(repo: Repo, args: argparse.Namespace) -> int:
    data = status_data(repo)
    bad = [r for r in data["peers"] if r["divergence"]]
    if args.json:
        print_json(data)
    else:
        for r in data["peers"]:
            w = r["witnessed"]
            seen = f"witnessed size {w['size']} (our entry #{w['entry']})" if w else "never witnessed"
            verdict = r["verdict"]
            state = "no sync yet" if not verdict else ("ok" if verdict["ok"] else f"FAILED {verdict['code']}")
            print(f"{r['name']:<16} {seen}; {r['entries']} entries; last sync: {state}; trust {r['trust']}")
        m = data["merged"]
        print(f"merged view: {m['size']} content entries, root {m['root']}")
        for c in data["conflicts"]:
            print(f"conflict: {c['type']} {c['component']} {c['version']}: "
                  + ", ".join(f"{x['source']} {x['entry'][:12]}" for x in c["entries"]))
    if args.strict and data["conflicts"]:
        raise VaultMeshError("VM-FEDERATION-CONFLICT", f"{len(data['conflicts'])} conflict(s) in the merged view",
                             "two logs disagree about one release: both statements are kept; resolve with their owners")
    return 1 if bad else 0


def _merge(repo: Repo, args: argparse.Namespace) -> int:
    merged = federation.merged_view(repo)
    key = signing_key(repo)
    body = federation.merge_body(repo, merged)
    entry = sign_body(body, key)
    result = ledger.append(repo, key, [entry])
    data = {"ok": True, "entry": entry.id, "seq": result.first_seq, "merged": body["entries"], "inputs": body["peer"]}
    if args.json:
        print_json(data)
    else:
        print(f"merge entry #{result.first_seq} ({entry.id[:12]}): {merged.size} content entries from "
              f"{len(merged.inputs)} log(s), root {merged.root.hex()}")
    return 0
