"""A derived SQLite index of the ledger for query, list, timeline and ADRs: a cache, never trusted.

The log (refs/vaultmesh/log) is the truth; this file under the git dir only makes reading it fast. It is keyed by
the log commit it was built from: when the log grew, only the new entries are read and added; when the log was
rewritten (the indexed head is no longer an ancestor, or an old entry changed), or the file is missing, corrupt
or of another schema, it is thrown away and rebuilt from the log. `verify` never reads it. Readers open it in WAL
mode, so a reader never waits for a writer; two writers take turns (an IMMEDIATE transaction) and the second
finds the work done.

Full-text search is exact: a term matches an entry when it occurs, case-folded (`str.casefold`), inside one of the
entry's searchable fields. A trigram FTS5 table (where this SQLite has it) narrows the candidates for terms of
three characters or more; every candidate is then checked with `instr`, so results never depend on how SQLite
tokenises text.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import VaultMeshError

if TYPE_CHECKING:
    from .entry import Entry
    from .git import Repo

SCHEMA = 1
T = TypeVar("T")
REF_LOG = "refs/vaultmesh/log"
FILE_NAME = "index.sqlite"
# body fields searched by `query` (evidence items each count as one field)
SEARCHED = ("component", "version", "message", "title", "environment", "status", "document")


def path_for(repo: Repo) -> Path:
    return Path(repo.git_dir) / "vaultmesh" / FILE_NAME


def fold(text: str) -> str:
    return text.casefold()


def searchable(body: dict[str, Any]) -> list[str]:
    """The fields `query` searches, as strings: component, version, message, evidence items, title, environment,
    status, the ADR document, and the subject's ref."""
    out = [body[k] for k in SEARCHED if isinstance(body.get(k), str)]
    out += [e for e in body.get("evidence") or [] if isinstance(e, str)]
    subj = body.get("subject")
    if isinstance(subj, dict) and isinstance(subj.get("ref"), str):
        out.append(subj["ref"])
    return out


def _text(body: dict[str, Any]) -> str:
    # fields joined by "\n": a term never holds a control character (parse_pattern), so no term matches across two
    return "\n".join(fold(s) for s in searchable(body))


def _str(body: dict[str, Any], key: str) -> str | None:
    v = body.get(key)
    return v if isinstance(v, str) else None


def _int(body: dict[str, Any], key: str) -> int | None:
    v = body.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def row_of(seq: int, e: Entry) -> tuple[Any, ...]:
    b = e.body
    subj: dict[str, Any] = b["subject"] if isinstance(b.get("subject"), dict) else {}
    peer: dict[str, Any] = b["peer"] if isinstance(b.get("peer"), dict) else {}
    sup = b.get("supersedes")
    return (seq, e.id, e.type, _str(b, "recorded_at"), _str(b, "component"), _str(b, "version"),
            _str(b, "environment"), _str(b, "title"), _str(b, "status"), _int(b, "number"),
            json.dumps(sup) if isinstance(sup, list) else None,
            subj.get("ref") if isinstance(subj.get("ref"), str) else None,
            subj.get("commit") if isinstance(subj.get("commit"), str) else None,
            peer.get("name") if isinstance(peer.get("name"), str) else None,
            peer.get("log") if isinstance(peer.get("log"), str) else None, _text(b))


_COLUMNS = ("seq, id, type, recorded_at, component, version, environment, title, status, number, supersedes, "
            "subject_ref, subject_commit, peer, peer_log, text")


# Plain classes, not dataclasses: each @dataclass costs start-up time (generated code), and this module is on the
# read path whose whole run is a few tens of milliseconds.
class Hit:
    """One indexed entry: the fields the index keeps of it (unverified). The entry itself is read from the log
    (`entries_of`)."""

    __slots__ = ("seq", "id", "type", "recorded_at", "component", "version", "environment", "title", "status",
                 "number", "supersedes", "subject_ref", "subject_commit", "peer", "peer_log")

    def __init__(self, row: Sequence[Any]) -> None:
        (self.seq, self.id, self.type, self.recorded_at, self.component, self.version, self.environment,
         self.title, self.status, self.number, supersedes, self.subject_ref, self.subject_commit, self.peer,
         self.peer_log) = row[:15]
        self.supersedes: list[int] | None = json.loads(supersedes) if supersedes is not None else None

    seq: int
    id: str
    type: str
    recorded_at: str
    component: str | None
    version: str | None
    environment: str | None
    title: str | None
    status: str | None
    number: int | None
    subject_ref: str | None
    subject_commit: str | None
    peer: str | None
    peer_log: str | None


class Query:
    """What to select. `terms` must all occur (case-folded) in one searchable field each; `excluded` none."""

    def __init__(self, terms: Sequence[str] = (), excluded: Sequence[str] = (), types: Sequence[str] = (),
                 component: str | None = None, version: str | None = None, environment: str | None = None,
                 signer: str | None = None, since: str | None = None, until: str | None = None,
                 limit: int | None = None, newest_first: bool = True) -> None:
        self.terms, self.excluded, self.types = list(terms), list(excluded), list(types)
        self.component, self.version, self.environment, self.signer = component, version, environment, signer
        self.since, self.until = since, until  # inclusive, RFC 3339 UTC seconds
        self.limit, self.newest_first = limit, newest_first

    def __repr__(self) -> str:
        return f"Query({vars(self)})"


def invalid(cause: str, hint: str) -> VaultMeshError:
    return VaultMeshError("VM-QUERY-INVALID", cause, hint)


_PATTERN_HINT = ('a pattern is words that must all occur (case does not matter), "quoted phrases", and -word to '
                 'exclude, e.g. `query "postgres 16" -staging`')


def parse_pattern(pattern: str) -> tuple[list[str], list[str]]:
    """Words and "quoted phrases" that must occur, and -words that must not; terms are case-folded."""
    terms: list[str] = []
    excluded: list[str] = []
    pos = 0
    while pos < len(pattern):
        ch = pattern[pos]
        if ch.isspace():
            pos += 1
            continue
        neg = ch == "-" and pos + 1 < len(pattern) and not pattern[pos + 1].isspace()
        if neg:
            pos += 1
        if pattern[pos] == '"':
            end = pattern.find('"', pos + 1)
            if end < 0:
                raise invalid(f"unbalanced quote in pattern {pattern!r}", _PATTERN_HINT)
            term, pos = pattern[pos + 1:end], end + 1
        else:
            m = re.compile(r"\S+").match(pattern, pos)
            assert m is not None
            term, pos = m.group(), m.end()
            if '"' in term:
                raise invalid(f"a quote inside the word {term!r} in pattern {pattern!r}", _PATTERN_HINT)
        if any(unicodedata.category(c) == "Cc" for c in term):
            raise invalid(f"pattern {pattern!r} holds a control character", _PATTERN_HINT)
        if not term.strip():
            raise invalid(f"an empty phrase in pattern {pattern!r}", _PATTERN_HINT)
        (excluded if neg else terms).append(fold(term))
    return terms, excluded


_DATE = r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})Z)?$"


def parse_date(text: str, *, end: bool, what: str) -> str:
    """YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ as the RFC 3339 second it bounds: a day given as --until includes that
    whole day."""
    import datetime

    m = re.match(_DATE, text)
    try:
        if m is None:
            raise ValueError
        parts = [int(g) for g in m.groups() if g is not None]
        datetime.datetime(*parts)  # type: ignore[arg-type]  # month 13, day 32, hour 25 raise here
    except ValueError:
        raise invalid(f"{what} {text!r} is not a date",
                      "give YYYY-MM-DD (a whole day, UTC) or YYYY-MM-DDTHH:MM:SSZ") from None
    if m.group(4) is not None:
        return text
    return text + ("T23:59:59Z" if end else "T00:00:00Z")


def check_types(types: Sequence[str]) -> list[str]:
    if not types:
        return []
    from .entry import TYPES

    for t in types:
        if t not in TYPES:
            raise invalid(f"unknown entry type {t!r}", f"types are: {', '.join(TYPES)}")
    return list(types)


def check_limit(limit: int | None) -> int | None:
    if limit is not None and limit < 0:
        raise invalid(f"--limit {limit} is negative", "give --limit 0 or more (0 prints nothing)")
    return limit


# --- the file ------------------------------------------------------------------------------------------------


def _create(db: sqlite3.Connection) -> None:
    db.executescript(f"""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE entries (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL, recorded_at TEXT,
            component TEXT, version TEXT, environment TEXT, title TEXT, status TEXT, number INTEGER,
            supersedes TEXT, subject_ref TEXT, subject_commit TEXT, peer TEXT, peer_log TEXT, text TEXT NOT NULL);
        CREATE INDEX entries_type ON entries (type, seq);
        CREATE INDEX entries_time ON entries (recorded_at);
        CREATE INDEX entries_component ON entries (component);
        CREATE INDEX entries_commit ON entries (subject_commit);
        CREATE INDEX entries_ref ON entries (subject_ref);
        CREATE TABLE signers (seq INTEGER NOT NULL, signer TEXT NOT NULL);
        CREATE INDEX signers_signer ON signers (signer, seq);
        INSERT INTO meta VALUES ('schema', '{SCHEMA}');
    """)
    try:
        db.execute("CREATE VIRTUAL TABLE fts USING fts5(text, content='entries', content_rowid='seq', "
                   "tokenize='trigram case_sensitive 1')")
    except sqlite3.OperationalError:  # no FTS5 or no trigram tokenizer (SQLite < 3.34): every search scans
        pass


def has_fts(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'fts'").fetchone() is not None


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT key, value FROM meta").fetchall())


def _add(db: sqlite3.Connection, items: Sequence[tuple[int, Entry]]) -> None:
    rows = [row_of(seq, e) for seq, e in items]
    db.executemany(f"INSERT INTO entries ({_COLUMNS}) VALUES ({', '.join('?' * 16)})", rows)
    db.executemany("INSERT INTO signers VALUES (?, ?)",
                   [(seq, str(s.get("signer"))) for seq, e in items for s in e.sigs])
    if has_fts(db):
        db.executemany("INSERT INTO fts (rowid, text) VALUES (?, ?)", [(r[0], r[15]) for r in rows])


def _set_head(db: sqlite3.Connection, head: str, size: int, skipped: int) -> None:
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                   [("head", head), ("size", str(size)), ("skipped", str(skipped))])


class Index:
    """An open, fresh index: its connection, the log head and size it describes, and how many entries of the
    log it could not parse (those are left out; `verify` reports them)."""

    def __init__(self, db: sqlite3.Connection, head: str | None, size: int, skipped: int, rebuilt: bool = False,
                 extended: int = 0) -> None:
        self.db, self.head, self.size, self.skipped = db, head, size, skipped
        self.rebuilt, self.extended = rebuilt, extended

    def close(self) -> None:
        self.db.close()

    def search(self, q: Query) -> list[Hit]:
        return search(self.db, q)


def _connect(path: Path | str) -> sqlite3.Connection:
    # a reader never waits (WAL); a writer waits for another's rebuild, which at 100k entries takes seconds
    db = sqlite3.connect(str(path), timeout=300.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _open_existing(path: Path) -> tuple[sqlite3.Connection, dict[str, str]] | None:
    """The index file if it is there, readable and of our schema; None otherwise (then it is rebuilt)."""
    if not path.exists():
        return None
    db = None
    try:
        db = _connect(path)
        meta = _meta(db)
        if meta.get("schema") == str(SCHEMA) and "head" in meta:
            return db, meta
    except sqlite3.DatabaseError:  # corrupt, truncated, not a database: a cache, so rebuild it
        pass
    if db is not None:
        db.close()
    return None


def _discard(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(str(path) + suffix)
        except FileNotFoundError:
            pass


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Only one process replaces a damaged index file: the others wait, then find the new one."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def open_index(repo: Repo, head: str | None = None, *, retry: bool = True) -> Index:
    """The index for the log as it is now: used as is when it was built from this head, extended when the log
    only grew since, rebuilt otherwise. Falls back to an index in memory when the git dir is not writable."""
    if head is None:
        head = repo.ref_oid(REF_LOG)
    if head is None:
        raise VaultMeshError("VM-NOT-INITIALIZED", f"{REF_LOG} does not exist",
                             "run `git vaultmesh init` (or `git vaultmesh pull` to fetch a colleague's ledger)")
    path = path_for(repo)
    found = _open_existing(path)
    if found is not None and found[1]["head"] == head:  # the fast path: nothing read from git but the ref
        meta = found[1]
        return Index(found[0], head, int(meta["size"]), int(meta.get("skipped", "0")))
    try:
        if found is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _file_lock(path):
                found = _open_existing(path)  # another process may have replaced it while we waited
                if found is None:
                    _discard(path)
                    db = _connect(path)
                    _create(db)
                    found = db, _meta(db)
        return _refresh(repo, found[0], head)
    except (OSError, sqlite3.OperationalError):  # read-only git dir, full disk: answer from memory this time
        if found is not None:
            found[0].close()
        db = sqlite3.connect(":memory:", isolation_level=None)
        _create(db)
        return _refresh(repo, db, head)
    except sqlite3.DatabaseError:  # damaged under our feet: once more from scratch, then from memory
        if found is not None:
            found[0].close()
        if not retry:
            db = sqlite3.connect(":memory:", isolation_level=None)
            _create(db)
            return _refresh(repo, db, head)
        with _file_lock(path):
            _discard(path)
        return open_index(repo, head, retry=False)


def _refresh(repo: Repo, db: sqlite3.Connection, head: str) -> Index:
    """Bring the index to `head` in one write transaction: readers see the old state until it commits."""
    db.execute("BEGIN IMMEDIATE")  # one writer at a time; readers go on reading the last commit (WAL)
    try:
        meta = _meta(db)
        size, skipped = int(meta.get("size", "0")), int(meta.get("skipped", "0"))
        if meta.get("head") == head:  # another process brought it up to date while we waited
            db.execute("COMMIT")
            return Index(db, head, size, skipped)
        new = _appended(repo, meta.get("head", ""), size, head)
        if new is not None:
            from . import ledger
            from .entry import parse_line

            items: list[tuple[int, Entry]] = []
            for (seq, _), blob in zip(new, repo.read_blobs([oid for _, oid in new])):
                try:
                    items.append((seq, parse_line(ledger.split_blob(blob, f"entry #{seq}"), f"entry #{seq}")))
                except VaultMeshError:
                    skipped += 1
            _add(db, items)
            _set_head(db, head, size + len(new), skipped)
            db.execute("COMMIT")
            return Index(db, head, size + len(new), skipped, extended=len(new))
        index = _reread(repo, db)
        db.execute("COMMIT")
        return index
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _reread(repo: Repo, db: sqlite3.Connection) -> Index:
    """Empty the index and fill it from the whole log (the log was rewritten, or this is a new index)."""
    from . import ledger

    db.execute("DELETE FROM entries")
    db.execute("DELETE FROM signers")
    if has_fts(db):
        db.execute("INSERT INTO fts (fts) VALUES ('delete-all')")
    view = ledger.read_view(repo, REF_LOG)
    items = [(seq, e) for seq, e in enumerate(view.entries) if e is not None]
    _add(db, items)
    skipped = view.size - len(items)
    _set_head(db, view.head, view.size, skipped)
    return Index(db, view.head, view.size, skipped, rebuilt=True)


def _appended(repo: Repo, old: str, size: int, head: str) -> list[tuple[int, str]] | None:
    """The entries `head` adds to the indexed log `old`; None: rebuild the index."""
    from .ledger import appended_entries

    return appended_entries(repo, old, size, head)


# --- reading -------------------------------------------------------------------------------------------------


def search(db: sqlite3.Connection, q: Query) -> list[Hit]:
    if q.limit == 0:
        return []
    where: list[str] = []
    params: list[Any] = []
    fts_terms = [t for t in q.terms if len(t) >= 3]
    if fts_terms and has_fts(db):
        phrase = " AND ".join('"' + t.replace('"', '""') + '"' for t in fts_terms)
        where.append("e.seq IN (SELECT rowid FROM fts WHERE fts MATCH ?)")
        params.append(phrase)
    for t in q.terms:  # the exact check, for every term (the trigram index only narrows)
        where.append("instr(e.text, ?) > 0")
        params.append(t)
    for t in q.excluded:
        where.append("instr(e.text, ?) = 0")
        params.append(t)
    if q.types:
        where.append(f"e.type IN ({', '.join('?' * len(q.types))})")
        params += q.types
    for col, value in (("component", q.component), ("version", q.version), ("environment", q.environment)):
        if value is not None:
            where.append(f"e.{col} = ?")
            params.append(value)
    if q.signer is not None:
        where.append("e.seq IN (SELECT seq FROM signers WHERE signer = ?)")
        params.append(q.signer)
    if q.since is not None:
        where.append("e.recorded_at >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append("e.recorded_at <= ?")
        params.append(q.until)
    sql = (f"SELECT {_COLUMNS} FROM entries e" + (" WHERE " + " AND ".join(where) if where else "")
           + f" ORDER BY e.seq {'DESC' if q.newest_first else 'ASC'}")
    if q.limit is not None:
        sql += " LIMIT ?"
        params.append(q.limit)
    return [Hit(r) for r in db.execute(sql, params)]


def with_index(repo: Repo, read: Callable[[Index], T], head: str | None = None) -> T:
    """`read(index)`, once more on a rebuilt index if SQLite finds the file damaged while reading it."""
    index = open_index(repo, head)
    try:
        return read(index)
    except sqlite3.DatabaseError:
        index.close()
        path = path_for(repo)
        with _file_lock(path):
            _discard(path)
        index = open_index(repo, head)
        return read(index)
    finally:
        index.close()


def by_seq(db: sqlite3.Connection, seqs: Sequence[int]) -> list[Hit]:
    if not seqs:
        return []
    sql = f"SELECT {_COLUMNS} FROM entries WHERE seq IN ({', '.join('?' * len(seqs))}) ORDER BY seq"
    return [Hit(r) for r in db.execute(sql, list(seqs))]


def entries_of(repo: Repo, head: str, hits: Sequence[Hit]) -> list[Entry]:
    """The entries behind `hits`, read from the log commit the index was built from (by path, so the bytes are
    git's, not the index's) and parsed by entry.py."""
    from .entry import entry_path, parse_line
    from .ledger import split_blob

    blobs = repo.read_blobs([f"{head}:{entry_path(h.seq)}" for h in hits])
    return [parse_line(split_blob(b, f"entry #{h.seq}"), f"entry #{h.seq}") for h, b in zip(hits, blobs)]


def freshness(repo: Repo, head: str | None) -> tuple[str, int | None]:
    """(state, size) of the index file for `doctor`, read only (never built or repaired here): "fresh" (built
    from `head`), "behind" (from another log head: the next query extends or rebuilds it), "absent", or
    "unreadable" (corrupt or another schema: the next query rebuilds it)."""
    path = path_for(repo)
    if not path.exists():
        return "absent", None
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            meta = _meta(db)
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return "unreadable", None
    if meta.get("schema") != str(SCHEMA) or "head" not in meta:
        return "unreadable", None
    size = int(meta["size"]) if meta.get("size", "").isdigit() else None
    return ("fresh" if meta["head"] == head else "behind"), size
