"""The blind votes' store: one SQLite file that outlives the server.

WAL journal, one transaction per vote: ``record`` returns only after the commit, so a vote the visitor was told
about survives a kill -9 and a restart. synchronous=NORMAL: a WAL commit is then in the operating system's hands (a
process crash loses nothing; a power cut may lose the last commits) without an fsync per vote, which, one vote at a
time, made 20 simultaneous votes wait up to 200 ms for each other's fsyncs on a shared VM. The file carries its
schema version (PRAGMA user_version) and a random salt: a voter is sha256(salt + session) cut to 16 hex digits,
never an address, and the same session stays the same voter across restarts. With a mirror (the owner's
HARMAN_VOTES_REPO and HF_TOKEN on a Space), every vote is also appended as a JSON line to a folder that
huggingface_hub's CommitScheduler pushes to a private dataset.

The owner, from the command line:

    python -m scoring.votes export --votes saved/votes.sqlite --out votes.csv
    python -m scoring.votes clear --votes saved/votes.sqlite
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import secrets
import sqlite3
import sys
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path

from errors import Refusal
from scoring.leaderboard import Vote

SCHEMA_VERSION = 1
EXPORT_COLUMNS = ("battle_id", "time", "question", "variant_a", "variant_b", "answer_a", "answer_b", "choice",
                  "voter", "spec_a", "spec_b", "models", "settings")
JSON_COLUMNS = ("spec_a", "spec_b", "models", "settings")
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY,
    battle_id TEXT NOT NULL UNIQUE,  -- one vote per battle, whatever the server's memory says
    time TEXT NOT NULL,              -- UTC, ISO 8601
    question TEXT NOT NULL,
    variant_a TEXT NOT NULL, variant_b TEXT NOT NULL,
    answer_a TEXT NOT NULL, answer_b TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie', 'both_bad')),
    voter TEXT NOT NULL,
    spec_a TEXT NOT NULL, spec_b TEXT NOT NULL,  -- JSON: the column and its merge spec
    models TEXT NOT NULL,                        -- JSON: the model set's identity (preset, base, model1, model2)
    settings TEXT NOT NULL                       -- JSON: the generation settings both answers came from
);
CREATE INDEX IF NOT EXISTS votes_models ON votes (models);
"""


def as_json(value) -> str:
    """The one JSON spelling of a stored object: a model set's identity is matched by its text."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class StoreError(Refusal):
    """A store this server cannot use (a newer schema, not a SQLite file)."""


class VoteStore:
    """The votes in one SQLite file; safe to use from many threads (one connection, writes in turn)."""

    def __init__(self, path: str | Path, mirror: "Mirror | None" = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.mirror = mirror
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise StoreError("err_store_open", path=str(self.path), detail=str(err)) from None
        if version > SCHEMA_VERSION:
            raise StoreError("err_store_schema", path=str(self.path), found=version, known=SCHEMA_VERSION)
        with self._lock:
            self._db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('salt', ?)", (secrets.token_hex(16),))
            self.salt = self._db.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()[0]

    def voter(self, session: str) -> str:
        """The salted hash that stands for a session in the store."""
        return hashlib.sha256((self.salt + session).encode()).hexdigest()[:16]

    def record(self, vote: Mapping[str, object]) -> None:
        """Write one vote (EXPORT_COLUMNS' keys; the JSON ones as objects) and commit it; a second vote on the same
        battle is refused and writes nothing."""
        row = {k: as_json(vote[k]) if k in JSON_COLUMNS else vote[k]
               for k in EXPORT_COLUMNS}
        names = ", ".join(EXPORT_COLUMNS)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(f"INSERT INTO votes ({names}) VALUES ({', '.join('?' * len(row))})",
                                 tuple(row.values()))
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise Refusal("err_vote_twice", battle=vote["battle_id"]) from None
        if self.mirror is not None:
            self.mirror.append(row)

    def rows(self, models: Mapping | None = None) -> list[dict]:
        """Every vote in the order written (only those of one model set, given its identity)."""
        where, args = ("WHERE models = ?", (as_json(models),)) if models is not None else ("", ())
        with self._lock:
            cursor = self._db.execute(f"SELECT {', '.join(EXPORT_COLUMNS)} FROM votes {where} ORDER BY id", args)
            return [dict(zip(EXPORT_COLUMNS, r)) for r in cursor.fetchall()]

    def votes(self, models: Mapping | None = None) -> list[Vote]:
        """The votes as the leaderboard reads them (three columns: the page reads them after every vote)."""
        where, args = ("WHERE models = ?", (as_json(models),)) if models is not None else ("", ())
        with self._lock:
            cursor = self._db.execute(f"SELECT variant_a, variant_b, choice FROM votes {where} ORDER BY id", args)
            return [Vote(*r) for r in cursor.fetchall()]

    def state(self) -> tuple[int, str | None]:
        """How many votes and the last one's battle id: it changes with every vote written and with a clear (battle
        ids are never reused), so a leaderboard fitted at one state holds until the state moves."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*), (SELECT battle_id FROM votes ORDER BY id DESC LIMIT 1) "
                                    "FROM votes").fetchone()

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]

    def export_csv(self, out: str | Path) -> Path:
        """Every vote as a CSV file (EXPORT_COLUMNS; the JSON columns as JSON text)."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        with open(out, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, EXPORT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        return out

    def clear(self) -> int:
        """Remove every vote (the salt stays: a session is the same voter afterwards); how many were removed."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            n = self._db.execute("DELETE FROM votes").rowcount
            self._db.execute("COMMIT")
        return n

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Mirror:
    """Votes appended as JSON lines to a folder that a CommitScheduler pushes to the Hub every few minutes."""

    def __init__(self, folder: str | Path, scheduler=None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.scheduler = scheduler
        # A file of its own per server start: the scheduler uploads whole files, and two servers never append
        # to the same one.
        self.file = self.folder / f"votes-{uuid.uuid4().hex}.jsonl"
        self._lock = scheduler.lock if scheduler is not None else threading.Lock()

    def append(self, row: Mapping[str, object]) -> None:
        plain = {k: json.loads(v) if k in JSON_COLUMNS else v for k, v in row.items()}
        with self._lock:  # the scheduler's lock: no push reads a half-written line
            with open(self.file, "a", encoding="utf-8") as f:
                f.write(json.dumps(plain, ensure_ascii=False) + "\n")


def hub_mirror(repo: str, token: str, folder: str | Path, scheduler_type=None, every_minutes: float = 5) -> Mirror:
    """A Mirror whose folder huggingface_hub's CommitScheduler pushes to the private dataset ``repo``."""
    if scheduler_type is None:
        from huggingface_hub import CommitScheduler as scheduler_type
    Path(folder).mkdir(parents=True, exist_ok=True)
    scheduler = scheduler_type(repo_id=repo, repo_type="dataset", folder_path=str(folder), path_in_repo="votes",
                               every=every_minutes, private=True, token=token)
    return Mirror(folder, scheduler)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m scoring.votes", description="download or clear harman's votes")
    p.add_argument("action", choices=["export", "clear", "count"])
    p.add_argument("--votes", required=True, help="the SQLite store (app.py's --votes, env HARMAN_VOTES)")
    p.add_argument("--out", default="votes.csv", help="export: the CSV file to write")
    p.add_argument("--yes", action="store_true", help="clear: do not ask")
    args = p.parse_args(argv)
    if not Path(args.votes).exists():
        print(f"no vote store at {args.votes}; give the path the app was started with (--votes)", file=sys.stderr)
        return 2
    store = VoteStore(args.votes)
    if args.action == "export":
        print(f"{store.count()} votes written to {store.export_csv(args.out)}")
    elif args.action == "count":
        print(store.count())
    else:
        if not args.yes and input(f"remove all {store.count()} votes from {args.votes}? [y/N] ").lower() != "y":
            print("nothing removed")
            return 1
        print(f"{store.clear()} votes removed from {args.votes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
