"""SqliteStore: the embedded store, SQLite in WAL mode with group commit.

All writes go to one writer thread. It takes every operation waiting in its
queue, runs them in one transaction (a savepoint each, so one failing
operation does not undo the others) and commits once: with the default
synchronous=FULL that is one fsync of the WAL per group, however many
creates and results it holds. Reads that must see every committed write in
order (the timer's loads) also run on the writer; GetNotify and
ListNotifies read on a second connection in a reader thread.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterable

from ...common.config import ConfigError
from ...common.sealing import SecretBox
from . import codec, sqlite_groups as groups
from ...common.ids import id_tail
from ..engine.errors import Unavailable
from ..engine.ownership import DEFAULT_PARTITIONS, check_partitions
from ..engine.model import QUEUE_FIELDS, GroupStatus, ListFilter, NewGroup, Notification, QueueConfig, State
from .port import ACTIVE, GroupCallback, ResultWrite, queue_columns

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifies (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    state INTEGER NOT NULL,
    queue TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    trigger_key TEXT NOT NULL,
    due_ms INTEGER,
    create_ms INTEGER NOT NULL,
    complete_ms INTEGER,
    attempt_count INTEGER NOT NULL,
    budget_base INTEGER NOT NULL,
    first_attempt_ms INTEGER,
    spec TEXT NOT NULL,
    group_key TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS notifies_request_id ON notifies(request_id) WHERE request_id != '';
CREATE INDEX IF NOT EXISTS notifies_due ON notifies(due_ms, id) WHERE state IN (1, 3, 5);
CREATE INDEX IF NOT EXISTS notifies_trigger ON notifies(trigger_key) WHERE state = 2;
CREATE INDEX IF NOT EXISTS notifies_state ON notifies(state, id);
CREATE TABLE IF NOT EXISTS attempts (
    notify_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    dispatcher_id TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    error TEXT NOT NULL,
    success INTEGER NOT NULL,
    snippet BLOB NOT NULL,
    headers TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS attempts_notify ON attempts(notify_id, number);
CREATE TABLE IF NOT EXISTS probe (
    k INTEGER PRIMARY KEY,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    max_concurrent INTEGER NOT NULL,
    rate REAL NOT NULL,
    burst INTEGER NOT NULL,
    paused INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS notify_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notify_groups (
    group_key TEXT PRIMARY KEY,
    callback_url TEXT NOT NULL,
    callback_ms INTEGER,
    callback_id TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
"""
# After MIGRATIONS: an index on a column an older store gains there.
INDEXES = """
CREATE INDEX IF NOT EXISTS notifies_group ON notifies(group_key, state, complete_ms) WHERE group_key != '';
"""
# Columns added since the first release: (table, column, definition), added where missing.
MIGRATIONS = [("notifies", "group_key", "TEXT NOT NULL DEFAULT ''"), ("attempts", "headers", "TEXT NOT NULL DEFAULT ''"),
              ("notifies", "labels", "TEXT NOT NULL DEFAULT ''")]

_INSERT = f"INSERT INTO notifies ({codec.INSERT_COLUMNS}) VALUES ({', '.join('?' * codec.INSERT_COUNT)})"
# A batch of results' notify updates in one statement over a JSON array of codec.result_rows'
# state rows (state, due_ms, complete_ms, attempt_count, first_attempt_ms, id): each row found
# by its primary key, as executemany's UPDATE per row would, at ~3/4 of its cost in the writer
# (a row per notify: a notify has one result in a batch). A cancelled notify stays cancelled.
# json_extract, not ->> (SQLite 3.38); UPDATE FROM needs 3.33.
_SAVE_RESULTS = (
    "UPDATE notifies SET state = json_extract(r.value, '$[0]'), due_ms = json_extract(r.value, '$[1]'),"
    " complete_ms = json_extract(r.value, '$[2]'), attempt_count = json_extract(r.value, '$[3]'),"
    " first_attempt_ms = json_extract(r.value, '$[4]')"
    f" FROM json_each(?) AS r WHERE notifies.id = json_extract(r.value, '$[5]') AND notifies.state != {int(State.CANCELLED)}"
)
_JSON_ROWS = json.JSONEncoder(separators=(",", ":")).encode
# One stored spec with sealed secret headers, either format (a StoredSpec with sealed_headers starts with
# its field 1 tag, 0x0A; a JSON spec has "hs"), to check NOTIFY_SECRET_KEY at open.
_SEALED_SAMPLE = ("SELECT id, spec FROM notifies WHERE (typeof(spec) = 'blob' AND substr(spec, 1, 1) = X'0A')"
                  " OR (typeof(spec) = 'text' AND spec LIKE '%\"hs\":%') LIMIT 1")
# A row's labels as JSON: the labels column, or in a JSON spec (stores written before StoredSpec) its "l".
_LABELS = "CASE WHEN typeof(spec) = 'text' THEN CASE WHEN json_valid(spec) THEN json_extract(spec, '$.l') END ELSE nullif(labels, '') END"
_ACTIVE_SQL = ", ".join(str(int(s)) for s in ACTIVE)
MAX_GROUP = 4096
# Creates that arrive together commit together: when the last group held more than one op (callers
# are writing concurrently) and the next starts with creates, the writer waits while more keep
# arriving, GATHER_TICK_S at a time, at most GATHER_MAX_S, before it commits. Fewer, larger groups
# cost the event loop fewer wake-ups and the disk fewer fsyncs: unary CreateNotify with 128 in flight
# 1.24x the calls/s at 0.79x the CPU per call (docs/benchmarks.md, fourth wave). A lone caller (groups
# of one) never waits, nor does a group that starts with results, a cancel or any other write.
GATHER_TICK_S = 0.0003
GATHER_MAX_S = 0.002
MIN_SQLITE = (3, 35, 0)  # RETURNING (3.35), UPDATE ... FROM (3.33), upserts and partial indexes (older)


class StoreInUse(ConfigError):
    """Another process holds the SQLite file: one process owns it (DESIGN: fenced ownership)."""


class SqliteStore:
    """Store on one SQLite file. `synchronous` is FULL (fsync per group commit) or NORMAL."""

    def __init__(
        self, path: str | Path, *, synchronous: str = "FULL", secrets: SecretBox | None = None,
        partitions: int = DEFAULT_PARTITIONS,
    ) -> None:  # fmt: skip
        self.partitions = check_partitions(partitions)
        self._path = str(path)
        self._box = secrets
        self._sync = synchronous.upper()
        if self._sync not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"NOTIFY_STORE: synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self._ops: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-read")
        self._local = threading.local()
        self._closed = False
        self._lock_fd: int | None = None
        self.healthy = True  # the last group committed (see probe)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._sync}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.create_function("notify_tail", 1, id_tail, deterministic=True)  # common.ids: the partition bits
        return conn

    async def open(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigError(f"NOTIFY_STORE: this Python's SQLite is {sqlite3.sqlite_version}; the SQLite store needs"
                              f" {'.'.join(map(str, MIN_SQLITE))} or later (RETURNING, UPDATE ... FROM): use a Python"
                              " built with a newer SQLite, or a postgresql:// store")  # fmt: skip
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
        try:
            conn = self._open_conn()
        except BaseException:
            self._release_lock()  # a store that did not open holds nothing
            raise
        self._writer = threading.Thread(target=self._write_loop, args=(conn,), name="sqlite-writer", daemon=True)
        self._writer.start()

    def _open_conn(self) -> sqlite3.Connection:
        """The writer's connection to a store with its schema, partitions and key checked."""
        try:
            conn = self._connect()
            conn.executescript(SCHEMA)
            _migrate(conn)
            conn.executescript(INDEXES)
            self._fix_partitions(conn)
            sealed = conn.execute(_SEALED_SAMPLE).fetchone()
        except sqlite3.Error as e:
            raise Unavailable(f"cannot open SQLite store {self._path}: {e}") from e
        try:
            codec.check_sealed(sealed, self._box)
        except Exception:
            conn.close()
            raise
        return conn

    def _fix_partitions(self, conn: sqlite3.Connection) -> None:
        """The first open fixes the number of partitions; a later different one is refused."""
        conn.execute("INSERT OR IGNORE INTO notify_meta (key, value) VALUES ('partitions', ?)", (str(self.partitions),))
        (fixed,) = conn.execute("SELECT value FROM notify_meta WHERE key = 'partitions'").fetchone()
        if int(fixed) != self.partitions:
            conn.close()
            raise ConfigError(f"NOTIFY_PARTITIONS is {self.partitions} but the store {self._path} was created with"
                              f" {fixed}; partitions are fixed when a store is created")  # fmt: skip

    def _in(self, partitions) -> str:
        """A WHERE term: the row's partition is one of `partitions` (ints, so inlined)."""
        return f"notify_tail(id) % {self.partitions} IN ({','.join(str(int(p)) for p in sorted(partitions)) or 'NULL'})"

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._ops.put(None)
            await asyncio.to_thread(self._writer.join)
        await asyncio.get_running_loop().run_in_executor(self._reader, self._close_reader)
        await asyncio.to_thread(self._reader.shutdown)
        self._release_lock()

    def _take_lock(self) -> None:
        """An exclusive lock on `<file>.lock`, held until close (the kernel drops it if the
        process dies). It holds the owner's pid so a second process can name it."""
        path = self._path + ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreInUse(f"NOTIFY_STORE: {os.path.abspath(self._path)} is in use by another NotifyAgent process"
                             f" (pid {holder}); stop it or point NOTIFY_STORE at another file") from None  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the only descriptor releases the flock
            self._lock_fd = None

    def _close_reader(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()

    # --- plumbing -------------------------------------------------------

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        last = 1  # ops in the last group
        while True:
            op = self._ops.get()
            if op is None:
                break
            if last > 1 and type(op[0]) is _PlainInsert:
                self._gather()
            batch = [op]
            stop = False
            while len(batch) < MAX_GROUP:
                try:
                    nxt = self._ops.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run_group(conn, batch)
            last = len(batch)
            if stop:
                break
        conn.close()

    def _gather(self) -> None:
        """Waits while ops keep arriving (one tick at a time, up to GATHER_MAX_S): they join the group."""
        waited, seen = 0.0, self._ops.qsize()
        while waited < GATHER_MAX_S:
            time.sleep(GATHER_TICK_S)
            waited += GATHER_TICK_S
            now = self._ops.qsize()
            if now == seen:
                return
            seen = now

    def _run_group(self, conn: sqlite3.Connection, batch: list) -> None:
        results: list[tuple[Any, Any, BaseException | None]] = []
        failed = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            i, end, solo = 0, len(batch), 0  # ops before `solo` run one by one (their run failed as one)
            while i < end:
                if i >= solo and type(batch[i][0]) is _PlainInsert:  # a run of them: one statement, no savepoint each
                    j = i + 1
                    while j < end and type(batch[j][0]) is _PlainInsert:
                        j += 1
                    if j - i > 1:
                        if _insert_run(conn, batch[i:j], results):
                            i = j
                            continue
                        solo = j
                fn, fut = batch[i]
                i += 1
                conn.execute("SAVEPOINT op")
                try:
                    results.append((fut, fn(conn), None))
                    conn.execute("RELEASE op")
                except Exception as e:  # one bad op must not undo its group
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    if isinstance(e, sqlite3.OperationalError):  # disk full, I/O error: the store's trouble, not the caller's
                        failed = True
                        log.error("store write failed: %s", e)
                        e = Unavailable(f"store write failed: {e}")
                    results.append((fut, None, e))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            log.error("store commit failed: %s", e)
            failed = True
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error as again:
                log.error("store rollback failed: %s", again)
            err = Unavailable(f"store commit failed: {e}")
            results = [(fut, None, err) for _, fut in batch]
        self.healthy = not failed
        loop = batch[0][1].get_loop()
        loop.call_soon_threadsafe(_resolve, results)

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> asyncio.Future:
        if self._closed:
            raise Unavailable("store is closed")
        fut = asyncio.get_running_loop().create_future()
        self._ops.put((fn, fut))
        return fut

    def _read_conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._reader, lambda: fn(self._read_conn()))

    # --- operations -----------------------------------------------------

    async def probe(self) -> bool:
        """Whether a write that needs fresh space commits now (health checks call it while unhealthy)."""
        payload = os.urandom(1 << 18)
        try:
            await self._write(lambda conn: conn.execute("INSERT OR REPLACE INTO probe (k, payload) VALUES (1, ?)", (payload,)))
            await self._write(lambda conn: conn.execute("DELETE FROM probe"))
        except Unavailable:
            return False
        return self.healthy

    async def insert(self, items: list[Notification], *, group: NewGroup | None = None) -> list[Notification]:
        def op(conn: sqlite3.Connection) -> list[Notification]:
            got = self._insert_rows(conn, [codec.to_row(n, self._box) for n in items], group)
            return [n if first is None else first for n, first in zip(items, got)]

        return await self._write(op)

    async def insert_new(self, rows: list[tuple], *, group: NewGroup | None = None) -> list[Notification | None]:
        """Commits codec.new_row rows (encoding their specs once, here: the writer thread runs no
        Python per row); for a request_id seen before, the first notify stands in the row's place
        (None: the row was inserted)."""
        encoded = codec.encode_rows(rows, self._box)
        if group is None and not any(r[1] for r in encoded):  # nothing can conflict: the writer joins these up
            return await self._write(_PlainInsert(encoded))
        return await self._write(lambda conn: self._insert_rows(conn, encoded, group))

    def _insert_rows(self, conn: sqlite3.Connection, rows: list[tuple], group: NewGroup | None) -> list[Notification | None]:
        if group is not None and group.callback_url:
            groups.register(conn, group)
        # Without a request_id nothing can conflict: those go in together.
        insert_many(conn, [r for r in rows if not r[1]])
        out: list[Notification | None] = [None] * len(rows)
        for i, r in enumerate(rows):
            if not r[1]:
                continue
            if conn.execute(_INSERT + " ON CONFLICT(request_id) WHERE request_id != '' DO NOTHING", r).rowcount != 1:
                row = conn.execute(f"SELECT {codec.COLUMNS} FROM notifies WHERE request_id = ?", (r[1],)).fetchone()
                out[i] = codec.from_row(row, self._box)
        return out

    async def save_results(self, writes: list[ResultWrite], *, group_callback: GroupCallback | None = None) -> list[Notification]:
        states, attempts, follow_ups = codec.result_rows(writes, self._box)
        ending = codec.ended_groups(writes) if group_callback else []
        states_json = _JSON_ROWS(states)  # encoded here: the writer thread runs one statement for them all

        def op(conn: sqlite3.Connection) -> list[Notification]:
            conn.execute(_SAVE_RESULTS, (states_json,))
            add_attempts(conn, attempts)
            if follow_ups:
                conn.executemany(_INSERT, follow_ups)
            return groups.end(conn, ending, group_callback)

        return await self._write(op)

    async def transition(self, notify_id, *, allowed, state, due_ms, complete_ms, reset_budget=False, group_callback=None):
        def op(conn: sqlite3.Connection):
            marks = ",".join(str(int(s)) for s in allowed)
            budget = "budget_base = attempt_count, first_attempt_ms = NULL," if reset_budget else ""
            row = conn.execute(
                f"UPDATE notifies SET {budget} state=?, due_ms=?, complete_ms=? WHERE id=? AND state IN ({marks})"
                f" RETURNING {codec.COLUMNS}",
                (int(state), due_ms, complete_ms, notify_id),
            ).fetchone()
            changed, cur = _changed_or_current(conn, row, notify_id, self._box)
            ends = [cur.spec.group_key] if changed and state.terminal and cur.spec.group_key else []
            return changed, cur, groups.end(conn, ends, group_callback)

        return await self._write(op)

    async def cancel_group(self, group_key, *, complete_ms, group_callback=None, partitions=None):
        where = f" AND {self._in(partitions)}" if partitions is not None else ""

        def op(conn: sqlite3.Connection):
            cancelled = groups.cancel(conn, group_key, complete_ms, where)
            return cancelled, groups.end(conn, [group_key] if cancelled else [], group_callback)

        return await self._write(op)

    async def group(self, group_key: str) -> GroupStatus | None:
        return await self._read(lambda conn: groups.status(conn, group_key))

    async def update(self, notify_id, *, allowed, spec, state, due_ms):
        def op(conn: sqlite3.Connection):
            marks = ",".join(str(int(s)) for s in allowed)
            row = conn.execute(
                "UPDATE notifies SET spec=?, labels=?, trigger_key=?, state=?, due_ms=? WHERE id=?"
                f" AND state IN ({marks}) RETURNING {codec.COLUMNS}",
                (codec.spec_to_bytes(spec, self._box), codec.labels_json(spec), spec.trigger_key, int(state), due_ms,
                 notify_id),
            ).fetchone()
            return _changed_or_current(conn, row, notify_id, self._box)

        return await self._write(op)

    async def trigger(self, trigger_key: str, *, state: State, due_ms: int, partitions=None) -> list[Notification]:
        where = f" AND {self._in(partitions)}" if partitions is not None else ""

        def op(conn: sqlite3.Connection) -> list[Notification]:
            rows = conn.execute(
                f"UPDATE notifies SET state=?, due_ms=? WHERE trigger_key=? AND state={int(State.WAITING_TRIGGER)}{where}"
                f" RETURNING {codec.COLUMNS}",
                (int(state), due_ms, trigger_key),
            ).fetchall()
            return sorted((codec.from_row(r, self._box) for r in rows), key=lambda n: n.id)

        return await self._write(op)

    async def get(self, notify_id: str) -> Notification | None:
        def op(conn: sqlite3.Connection) -> Notification | None:
            row = conn.execute(f"SELECT {codec.COLUMNS} FROM notifies WHERE id=?", (notify_id,)).fetchone()
            if row is None:
                return None
            n = codec.from_row(row, self._box)
            rows = conn.execute(
                f"SELECT {codec.ATTEMPT_COLUMNS} FROM attempts WHERE notify_id=? ORDER BY number, rowid", (notify_id,)
            ).fetchall()
            if rows:  # else it keeps NO_ATTEMPTS
                n.attempts = [codec.attempt_from_row(r) for r in rows]
            return n

        return await self._read(op)

    async def load_due(self, *, after: tuple[int, str], until_ms: int, limit: int, partitions=None) -> list[Notification]:
        where = f" AND {self._in(partitions)}" if partitions is not None else ""
        sql = (
            # INDEXED BY: without statistics the planner picks notifies_state and sorts every active row.
            f"SELECT {codec.COLUMNS} FROM notifies INDEXED BY notifies_due WHERE state IN ({_ACTIVE_SQL}) AND (due_ms, id) > (?, ?)"
            f" AND due_ms < ?{where} ORDER BY due_ms, id LIMIT ?"
        )
        rows = await self._write(lambda conn: conn.execute(sql, (*after, until_ms, limit)).fetchall())
        return [codec.from_row(r, self._box) for r in rows]

    async def blocked_heads(self, partitions=None) -> list[tuple[str, str]]:
        where = f" AND {self._in(partitions)}" if partitions is not None else ""
        sql = f"SELECT ordering_key, id FROM notifies WHERE state = {int(State.RETRY_WAIT)} AND ordering_key != ''{where}"
        return await self._write(lambda conn: conn.execute(sql).fetchall())

    async def counts(self) -> dict[tuple[str, State], int]:
        sql = "SELECT queue, state, COUNT(*) FROM notifies GROUP BY queue, state"
        return {(q, State(s)): c for q, s, c in await self._read(lambda conn: conn.execute(sql).fetchall())}

    async def save_queue(self, q: QueueConfig, fields: Iterable[str] = QUEUE_FIELDS) -> QueueConfig:
        sql = ("INSERT INTO queues (name, max_concurrent, rate, burst, paused) VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO "
               f"UPDATE SET {queue_columns(fields)} RETURNING name, max_concurrent, rate, burst, paused")  # fmt: skip
        row = await self._write(lambda conn: conn.execute(sql, (q.name, q.max_concurrent, q.rate, q.burst, int(q.paused))).fetchone())
        return QueueConfig(*row[:4], bool(row[4]))

    async def load_queues(self) -> list[QueueConfig]:
        sql = "SELECT name, max_concurrent, rate, burst, paused FROM queues ORDER BY name"
        rows = await self._write(lambda conn: conn.execute(sql).fetchall())
        return [QueueConfig(n, m, r, b, bool(p)) for n, m, r, b, p in rows]

    async def list(self, f: ListFilter, *, after_id: str, limit: int) -> list[Notification]:
        where, args = ["id > ?"], [after_id]
        for column, value in (("queue", f.queue), ("trigger_key", f.trigger_key), ("ordering_key", f.ordering_key),
                              ("group_key", f.group_key)):  # fmt: skip
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if f.group_key:
            where.append("group_key != ''")  # lets the planner use the partial index notifies_group
        if f.state is not None:
            where.append("state = ?")
            args.append(int(f.state))
        if f.label_key:  # a scan, bounded by the other filters and the page
            match = "" if f.label_value is None else " AND value = ?"
            where.append(f"EXISTS (SELECT 1 FROM json_each({_LABELS}) WHERE key = ?{match})")
            args += [f.label_key] if f.label_value is None else [f.label_key, f.label_value]
        sql = f"SELECT {codec.COLUMNS} FROM notifies WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        rows = await self._read(lambda conn: conn.execute(sql, (*args, limit)).fetchall())
        return [codec.from_row(r, self._box) for r in rows]


def _migrate(conn: sqlite3.Connection) -> None:
    for table, column, definition in MIGRATIONS:
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            log.info("SQLite store: added the column %s.%s", table, column)


def _changed_or_current(conn: sqlite3.Connection, updated, notify_id: str, box: SecretBox | None) -> tuple[bool, Notification | None]:
    """(True, the updated row) or, when the update matched nothing, (False, the row as it is)."""
    if updated is not None:
        return True, codec.from_row(updated, box)
    row = conn.execute(f"SELECT {codec.COLUMNS} FROM notifies WHERE id=?", (notify_id,)).fetchone()
    return False, codec.from_row(row, box) if row else None


INSERT_CHUNK = 64  # rows per INSERT: 64 x 15 values stays under the smallest variable limit SQLite builds have (999)


def insert_many(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """conn.executemany(_INSERT, rows) as multi-row INSERTs of 64, 32, ... 1 rows (a few cached statements):
    one sqlite3_step per 64 rows instead of one per row, and with it one release of the GIL. The writer's
    CPU per row 8.5 -> 4.9 us (the same rows, indexes and fsync; tests/test_store_format.py pins the rows)."""
    _insert_chunked(conn, _insert_sql, rows)


@functools.lru_cache(maxsize=None)  # k is a power of two up to INSERT_CHUNK
def _insert_sql(k: int) -> str:
    return f"INSERT INTO notifies ({codec.INSERT_COLUMNS}) VALUES " + ", ".join([f"({', '.join('?' * codec.INSERT_COUNT)})"] * k)


def add_attempts(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Inserts codec.attempt_row rows in order, as insert_many does notifies: 64 rows per statement
    (640 values) and fewer, so one sqlite3_step per 64 attempts (2.3 -> 1.8 us per row)."""
    _insert_chunked(conn, _attempts_sql, rows)


def _insert_chunked(conn: sqlite3.Connection, sql_for, rows: list[tuple]) -> None:
    """Runs rows in order through sql_for(k), an INSERT of k rows, with k = 64, 32, ... 1."""
    i, n = 0, len(rows)
    while i < n:
        k = INSERT_CHUNK
        while k > n - i:
            k >>= 1
        conn.execute(sql_for(k), list(chain.from_iterable(rows[i:i + k])))
        i += k


@functools.lru_cache(maxsize=None)  # k is a power of two up to INSERT_CHUNK
def _attempts_sql(k: int) -> str:
    return f"INSERT INTO attempts (notify_id, {codec.ATTEMPT_COLUMNS}) VALUES " + ", ".join(["(?,?,?,?,?,?,?,?,?,?)"] * k)


class _PlainInsert:
    """An insert_new op whose rows have no request_id and no group: nothing in them can conflict, so
    the writer runs consecutive ones as one statement in one savepoint (CreateNotify calls that
    arrive together: multi-row INSERTs for the group instead of a savepoint and an INSERT per call)."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple]) -> None:
        self.rows = rows

    def __call__(self, conn: sqlite3.Connection) -> list[None]:
        insert_many(conn, self.rows)
        return [None] * len(self.rows)


def _insert_run(conn: sqlite3.Connection, run: list, results: list) -> bool:
    """Runs consecutive _PlainInsert ops as one statement; False (nothing done) if it fails, and
    the writer runs them one by one, so one bad op fails alone."""
    conn.execute("SAVEPOINT run")
    try:
        insert_many(conn, [r for op, _ in run for r in op.rows])
    except Exception:  # noqa: BLE001 - whatever it was, the one-by-one path meets it again and answers it
        conn.execute("ROLLBACK TO run")
        conn.execute("RELEASE run")
        return False
    conn.execute("RELEASE run")
    results.extend((fut, [None] * len(op.rows), None) for op, fut in run)
    return True


def _resolve(results: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for fut, value, err in results:
        if fut.cancelled():
            continue
        if err is not None:
            fut.set_exception(err)
        else:
            fut.set_result(value)
