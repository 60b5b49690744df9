"""SQLite (WAL) persistence of the embedded server: JSON documents, queue entries, events and settings.

One connection guarded by one lock: every API call is a short transaction, which keeps queue pops atomic
(two workers never get the same task) without relying on SQLite's own busy handling.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Documents of this kind mark a log event id as stored for a task (id "<task>:<event id>", services/events.py).
LOG_EVENT_ID_KIND = "log_event_id"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    kind TEXT NOT NULL, id TEXT NOT NULL, name TEXT, doc TEXT NOT NULL, PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS docs_name ON docs (kind, name);
CREATE TABLE IF NOT EXISTS queue_entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, task TEXT NOT NULL,
    added TEXT NOT NULL, pos REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_entries_order ON queue_entries (queue, pos, seq);
CREATE INDEX IF NOT EXISTS queue_entries_task ON queue_entries (task);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, task TEXT NOT NULL, type TEXT NOT NULL,
    ts INTEGER NOT NULL, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_task ON events (task, type, ts, seq);
"""


class Store:
    """Documents by kind ("task", "queue", "project", "worker"), queue entries, events and settings."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # It holds the keys and the token secret: private from creation; SQLite gives its WAL and shm the same mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._depth = 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Serialize a read-modify-write; nested use joins the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, tuple(args)).fetchall()

    def _exec(self, sql: str, args: Iterable[Any] = ()) -> int:
        with self._lock:
            return self._conn.execute(sql, tuple(args)).rowcount

    # settings
    def setting(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_setting(self, key: str, value: str) -> None:
        self._exec("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    # documents
    def get(self, kind: str, id: str) -> dict | None:
        rows = self._query("SELECT doc FROM docs WHERE kind = ? AND id = ?", (kind, id))
        return json.loads(rows[0][0]) if rows else None

    def get_many(self, kind: str, ids: Iterable[str]) -> list[dict]:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self._query(f"SELECT doc FROM docs WHERE kind = ? AND id IN ({marks})", (kind, *ids))
        return [json.loads(r[0]) for r in rows]

    def by_name(self, kind: str, name: str) -> list[dict]:
        rows = self._query("SELECT doc FROM docs WHERE kind = ? AND name = ?", (kind, name))
        return [json.loads(r[0]) for r in rows]

    def all(self, kind: str) -> list[dict]:
        rows = self._query("SELECT doc FROM docs WHERE kind = ? ORDER BY rowid", (kind,))
        return [json.loads(r[0]) for r in rows]

    def put(self, kind: str, doc: dict) -> None:
        self._exec(
            "INSERT OR REPLACE INTO docs (kind, id, name, doc) VALUES (?, ?, ?, ?)",
            (kind, doc["id"], doc.get("name"), json.dumps(doc, separators=(",", ":"))),
        )

    def delete(self, kind: str, id: str) -> bool:
        return self._exec("DELETE FROM docs WHERE kind = ? AND id = ?", (kind, id)) > 0

    # queue entries
    def entries(self, queue: str) -> list[dict]:
        rows = self._query("SELECT task, added FROM queue_entries WHERE queue = ? ORDER BY pos, seq", (queue,))
        return [{"task": t, "added": a} for t, a in rows]

    def count_entries(self, queue: str) -> int:
        return self._query("SELECT COUNT(*) FROM queue_entries WHERE queue = ?", (queue,))[0][0]

    def queues_of_task(self, task: str) -> list[str]:
        return [r[0] for r in self._query("SELECT queue FROM queue_entries WHERE task = ?", (task,))]

    def push_entry(self, queue: str, task: str, added: str, front: bool = False) -> None:
        with self.transaction():
            agg = "MIN(pos) - 1" if front else "MAX(pos) + 1"
            pos = self._query(f"SELECT COALESCE({agg}, 0) FROM queue_entries WHERE queue = ?", (queue,))[0][0]
            self._exec(
                "INSERT INTO queue_entries (queue, task, added, pos) VALUES (?, ?, ?, ?)",
                (queue, task, added, pos),
            )

    def pop_entry(self, queue: str, task: str | None = None) -> dict | None:
        """Remove and return the first entry (only if it is `task`, when given)."""
        with self.transaction():
            rows = self._query(
                "SELECT seq, task, added FROM queue_entries WHERE queue = ? ORDER BY pos, seq LIMIT 1",
                (queue,),
            )
            if not rows or (task is not None and rows[0][1] != task):
                return None
            self._exec("DELETE FROM queue_entries WHERE seq = ?", (rows[0][0],))
            return {"task": rows[0][1], "added": rows[0][2]}

    def remove_entry(self, queue: str | None, task: str) -> int:
        if queue is None:
            return self._exec("DELETE FROM queue_entries WHERE task = ?", (task,))
        return self._exec("DELETE FROM queue_entries WHERE queue = ? AND task = ?", (queue, task))

    def clear_entries(self, queue: str) -> list[str]:
        with self.transaction():
            tasks = [e["task"] for e in self.entries(queue)]
            self._exec("DELETE FROM queue_entries WHERE queue = ?", (queue,))
            return tasks

    def reorder(self, queue: str, tasks: list[str]) -> None:
        """Rewrite the positions of a queue's entries in the given task order."""
        with self.transaction():
            for pos, task in enumerate(tasks):
                self._exec("UPDATE queue_entries SET pos = ? WHERE queue = ? AND task = ?", (pos, queue, task))

    # events
    def add_events(self, events: list[dict]) -> None:
        with self._lock:
            self._conn.executemany(
                "INSERT INTO events (task, type, ts, doc) VALUES (?, ?, ?, ?)",
                [(e["task"], e["type"], int(e["timestamp"]), json.dumps(e, separators=(",", ":"))) for e in events],
            )

    def events(
        self,
        task: str,
        types: list[str] | None = None,
        *,
        before: tuple[int, int] | None = None,
        after: tuple[int, int] | None = None,
        descending: bool = False,
        limit: int = 500,
    ) -> list[tuple[int, dict]]:
        """Events of a task as (seq, event), ordered by (timestamp, seq), paged by a (ts, seq) cursor."""
        where, args = ["task = ?"], [task]
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            args += types
        if before is not None:
            where.append("(ts < ? OR (ts = ? AND seq < ?))")
            args += [before[0], before[0], before[1]]
        if after is not None:
            where.append("(ts > ? OR (ts = ? AND seq > ?))")
            args += [after[0], after[0], after[1]]
        order = "DESC" if descending else "ASC"
        rows = self._query(
            f"SELECT seq, doc FROM events WHERE {' AND '.join(where)} ORDER BY ts {order}, seq {order} LIMIT ?",
            [*args, limit],
        )
        return [(seq, json.loads(doc)) for seq, doc in rows]

    def count_events(self, task: str, types: list[str] | None = None) -> int:
        if types:
            marks = ",".join("?" * len(types))
            sql = f"SELECT COUNT(*) FROM events WHERE task = ? AND type IN ({marks})"
            return self._query(sql, [task, *types])[0][0]
        return self._query("SELECT COUNT(*) FROM events WHERE task = ?", (task,))[0][0]

    def delete_events(self, task: str) -> int:
        """Delete a task's events, and the log event ids it stored (an id sent again afterwards is new again)."""
        prefix = f"{task}:"
        self._exec("DELETE FROM docs WHERE kind = ? AND substr(id, 1, ?) = ?", (LOG_EVENT_ID_KIND, len(prefix), prefix))
        return self._exec("DELETE FROM events WHERE task = ?", (task,))
