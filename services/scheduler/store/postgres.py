"""PostgresStore: the store for deployments that outgrow one machine, on asyncpg.

Same semantics as SqliteStore, with the same group commit on the event loop:
every write goes to one writer task, which takes every operation waiting in
its queue, runs them in one transaction (a savepoint each, so one failing
operation does not undo the others), commits once and only then resolves
each caller's future. The writer runs operations in the order they were
issued, so reads that must see every earlier write (the timer's load_due and
blocked_heads) run on it too; GetNotify, ListNotifies and counts read on a
small pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from ...common.sealing import SecretBox
from . import codec, postgres_groups as groups
from ...common.config import ConfigError
from ..engine.errors import Unavailable
from ..engine.ownership import DEFAULT_PARTITIONS, Fence, check_partitions
from ...common.ids import partition_of
from ..engine.model import QUEUE_FIELDS, GroupStatus, ListFilter, NewGroup, Notification, QueueConfig, Spec, State
from .port import ACTIVE, Fenced, GroupCallback, ResultWrite, queue_columns

log = logging.getLogger(__name__)

_ACTIVE_SQL = ", ".join(str(int(s)) for s in ACTIVE)
# ids compare byte-wise (COLLATE "C"), as in SQLite and Python: list pages and the
# timer's (due_ms, id) cursor must not depend on the database's locale.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS notifies (
    id TEXT COLLATE "C" PRIMARY KEY,
    request_id TEXT NOT NULL,
    state INTEGER NOT NULL,
    queue TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    trigger_key TEXT NOT NULL,
    due_ms BIGINT,
    create_ms BIGINT NOT NULL,
    complete_ms BIGINT,
    attempt_count INTEGER NOT NULL,
    budget_base INTEGER NOT NULL,
    first_attempt_ms BIGINT,
    spec TEXT NOT NULL
);
DO $$ BEGIN  -- migration: StoredSpec bytes in spec_pb (spec keeps the JSON of older rows), labels for the list filter
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'notifies' AND column_name = 'spec_pb') THEN
        ALTER TABLE notifies ADD COLUMN spec_pb BYTEA, ADD COLUMN labels TEXT NOT NULL DEFAULT '';
        ALTER TABLE notifies ALTER COLUMN spec SET DEFAULT '';
    END IF;
END $$;
DO $$ BEGIN  -- migration: only when missing, as ALTER TABLE locks the table even when it changes nothing
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'notifies' AND column_name = 'group_key') THEN
        ALTER TABLE notifies ADD COLUMN group_key TEXT COLLATE "C" NOT NULL DEFAULT '';
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS notifies_group ON notifies (group_key, state, complete_ms) WHERE group_key <> '';
CREATE UNIQUE INDEX IF NOT EXISTS notifies_request_id ON notifies (request_id) WHERE request_id <> '';
CREATE INDEX IF NOT EXISTS notifies_due ON notifies (due_ms, id) WHERE state IN ({_ACTIVE_SQL});
CREATE INDEX IF NOT EXISTS notifies_trigger ON notifies (trigger_key) WHERE state = {int(State.WAITING_TRIGGER)};
CREATE INDEX IF NOT EXISTS notifies_state ON notifies (state, id);
CREATE TABLE IF NOT EXISTS attempts (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notify_id TEXT COLLATE "C" NOT NULL,
    number INTEGER NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    dispatcher_id TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    error TEXT NOT NULL,
    success BOOLEAN NOT NULL,
    snippet BYTEA NOT NULL,
    headers TEXT NOT NULL DEFAULT ''
);
DO $$ BEGIN  -- migration, as above
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'attempts' AND column_name = 'headers') THEN
        ALTER TABLE attempts ADD COLUMN headers TEXT NOT NULL DEFAULT '';
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS attempts_notify ON attempts (notify_id, number, seq);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT COLLATE "C" PRIMARY KEY,
    max_concurrent INTEGER NOT NULL,
    rate DOUBLE PRECISION NOT NULL,
    burst INTEGER NOT NULL,
    paused BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS notify_groups (
    group_key TEXT COLLATE "C" PRIMARY KEY,
    callback_url TEXT NOT NULL,
    callback_ms BIGINT,
    callback_id TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS notify_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS partition_owners (  -- one row per partition: who may write it, under which epoch, until when
    partition INTEGER PRIMARY KEY,
    owner TEXT NOT NULL DEFAULT '',
    epoch BIGINT NOT NULL DEFAULT 0,
    expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);
CREATE TABLE IF NOT EXISTS scheduler_members (  -- live schedulers and the address peers forward to
    owner TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
"""
# The labels of a JSON spec (stores written before StoredSpec) for the list filter; NULL for a row
# whose JSON cannot be read (reported by the reads, never failing a list). PostgreSQL's JSON refuses
# \u0000 (a NUL in a form value, say): every escaped backslash is spelled \u005c first, so that
# what is left of \u0000 is a NUL escape, and defused.
SCHEMA += r"""
CREATE OR REPLACE FUNCTION notify_json_labels(spec text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN
    RETURN replace(replace(spec, '\\', '\u005c'), '\u0000', '\ufffd')::jsonb -> 'l';
EXCEPTION WHEN others THEN
    RETURN NULL;
END $f$;
"""
_ALPHA = "'0123456789ABCDEFGHJKMNPQRSTVWXYZ'"
# An id's partition is its last 10 bits (characters 25 and 26) modulo P: common.ids.partition_of in SQL.
ID_TAIL = (f"(GREATEST(strpos({_ALPHA}, substr(id, 25, 1)) - 1, 0) * 32"
           f" + GREATEST(strpos({_ALPHA}, substr(id, 26, 1)) - 1, 0))")  # fmt: skip
_FENCE = (  # the partitions among $1 this owner still holds at the epochs in $2; locks them against a takeover
    "SELECT o.partition FROM partition_owners o JOIN unnest($1::int[], $2::bigint[]) AS h(p, e)"
    " ON o.partition = h.p AND o.epoch = h.e WHERE o.owner = $3 FOR KEY SHARE OF o"
)
_SCHEMA_LOCK = 0x4E6F7469667941  # pg_advisory_xact_lock key: stores opening at once create the schema once

# One statement per insert call: rows go in in the caller's order, so within a
# batch the first of two items sharing a request_id is the one kept.
_ROW_TYPES = (  # the SQL types of groups.INSERT_COLUMNS, in order
    "text", "text", "int", "text", "text", "text", "bigint", "bigint", "bigint", "int", "int", "bigint", "bytea", "text", "text",
)  # fmt: skip
_COLS = [f"c{i}" for i in range(len(_ROW_TYPES))]
_INSERT = (
    f"INSERT INTO notifies ({groups.INSERT_COLUMNS}) SELECT {', '.join(_COLS)} FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_ROW_TYPES, 1))
    + f") WITH ORDINALITY AS t({', '.join(_COLS)}, ord) ORDER BY ord"
    " ON CONFLICT (request_id) WHERE request_id <> '' DO NOTHING RETURNING id"
)
# A batch of results in one statement (one round trip, its rows as arrays): the notifies' new
# fields, each guarded by (id, attempt) so a state never goes back to an earlier attempt (one
# row per notify: the engine puts one result of a notify in a batch), and their attempts, each
# number recorded once (DISTINCT ON: once within the batch too), in the batch's order.
_RESULT_TYPES = ("int", "bigint", "bigint", "int", "bigint", "text")  # codec.result_rows' state rows
_ATTEMPT_TYPES = ("text", "int", "bigint", "bigint", "text", "int", "text", "bool", "bytea", "text")  # its attempt rows
_ATTEMPT_COLS = ("notify_id", *codec.ATTEMPT_COLUMNS.split(", "))
_SAVE_RESULTS = (
    "WITH saved AS (UPDATE notifies n SET state = r.state, due_ms = r.due_ms, complete_ms = r.complete_ms,"
    " attempt_count = r.attempt_count, first_attempt_ms = r.first_attempt_ms FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_RESULT_TYPES, 1))
    + ") AS r(state, due_ms, complete_ms, attempt_count, first_attempt_ms, id)"
    f" WHERE n.id = r.id AND n.state <> {int(State.CANCELLED)} AND n.attempt_count <= r.attempt_count)"
    f" INSERT INTO attempts ({', '.join(_ATTEMPT_COLS)}) SELECT {', '.join(_ATTEMPT_COLS)} FROM ("
    f"SELECT DISTINCT ON (notify_id, number) * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_ATTEMPT_TYPES, len(_RESULT_TYPES) + 1))
    + f") WITH ORDINALITY AS a({', '.join(_ATTEMPT_COLS)}, ord) ORDER BY notify_id, number, ord) a"
    " WHERE NOT EXISTS (SELECT 1 FROM attempts x WHERE x.notify_id = a.notify_id AND x.number = a.number)"
    " ORDER BY ord"
)
_BY_ID = f"SELECT {groups.SELECT} FROM notifies WHERE id = $1"
_BY_REQUEST_IDS = f"SELECT {groups.SELECT} FROM notifies WHERE request_id = ANY($1::text[])"
_LOAD_DUE = (
    f"SELECT {groups.SELECT} FROM notifies WHERE state IN ({_ACTIVE_SQL})"
    " AND (due_ms, id) > ($1, $2) AND due_ms < $3 ORDER BY due_ms, id LIMIT $4"
)
# One stored spec with sealed secret headers, either format (a StoredSpec with sealed_headers starts
# with its field 1 tag, 0x0A; a JSON spec has "hs"), to check NOTIFY_SECRET_KEY at open.
_SEALED_SAMPLE = (
    "SELECT id, COALESCE(spec_pb, convert_to(spec, 'UTF8')) FROM notifies"
    " WHERE substring(spec_pb from 1 for 1) = '\\x0a'::bytea OR (spec_pb IS NULL AND spec LIKE '%\"hs\":%') LIMIT 1"
)
# A row's labels as jsonb: the labels column, or in a JSON spec its "l" (notify_json_labels). Labels
# may hold any text (the store takes what it is given): a NUL is defused as above.
_LABELS = ("(CASE WHEN spec_pb IS NULL THEN notify_json_labels(spec) ELSE"
           " replace(replace(nullif(labels, ''), '\\\\', '\\u005c'), '\\u0000', '\\ufffd')::jsonb END)")
_BLOCKED = f"SELECT ordering_key, id FROM notifies WHERE state = {int(State.RETRY_WAIT)} AND ordering_key <> ''"


def _in_partitions(partitions: int, arg: int) -> str:
    """A WHERE term: the row's partition is in the int[] parameter number `arg`."""
    return f"{ID_TAIL} % {partitions} = ANY(${arg}::int[])"

# Errors that mean "the database is gone or refusing us", not "this operation is wrong".
_CONNECTION_ERRORS = (
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,  # includes "connection does not exist"
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)
_CLOSE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
MAX_GROUP = 4096

Op = Callable[[asyncpg.Connection], Awaitable[Any]]
Parts = frozenset[int] | None  # the partitions a write touches (fenced), or None (not fenced)


async def read_ownership(conn: asyncpg.Connection) -> tuple[dict[int, str], list[tuple[str, str]]]:
    """Who owns what now: partition -> owner of the unexpired ownership rows, and (owner,
    address) of the live members sorted by owner. The ownership tick reads it inside its
    transaction, routing on the pool between ticks."""
    owners = await conn.fetch("SELECT partition, owner FROM partition_owners WHERE owner <> '' AND expires_at > now()")
    live = await conn.fetch("SELECT owner, address FROM scheduler_members WHERE expires_at > now() ORDER BY owner")
    return {r[0]: r[1] for r in owners}, [(r[0], r[1]) for r in live]


class PostgresStore:
    """Store on PostgreSQL. `pool_size` connections serve reads; writes use one more of their own.

    `schema` puts the tables in that schema (created if missing) via each
    connection's search_path; tests use it to isolate themselves.
    """

    def __init__(
        self, dsn: str, *, pool_size: int = 4, schema: str | None = None, connect_timeout: float = 10.0,
        secrets: SecretBox | None = None, partitions: int = DEFAULT_PARTITIONS, idle_tx_timeout_s: float = 0.0,
    ) -> None:  # fmt: skip
        if pool_size < 1:
            raise ValueError(f"NOTIFY_STORE: pool_size must be at least 1, not {pool_size}")
        self.partitions = check_partitions(partitions)
        self._fence: Fence | None = None
        self._owner = ""
        self._dsn = dsn
        self._box = secrets
        self._where, self._secret = _describe(dsn)
        self._pool_size = pool_size
        self._schema = schema
        self._timeout = connect_timeout
        self._settings = {"search_path": _quote_ident(schema)} if schema else {}
        if idle_tx_timeout_s > 0:  # a paused writer cannot keep its partitions' rows locked against a takeover
            self._settings["idle_in_transaction_session_timeout"] = str(int(idle_tx_timeout_s * 1000))
        self._ops: asyncio.Queue[tuple[Op, asyncio.Future, Parts] | None] = asyncio.Queue()
        self._conn: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._writer: asyncio.Task | None = None
        self._closed = False
        self.healthy = True  # the last group committed (see probe)

    async def open(self) -> None:
        try:
            self._conn = await self._connect()
            async with self._conn.transaction():
                await self._conn.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
                if self._schema:
                    await self._conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(self._schema)}")
                await self._conn.execute(SCHEMA)
                await self._fix_partitions(self._conn)
                sealed = await self._conn.fetchrow(_SEALED_SAMPLE)
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, timeout=self._timeout, server_settings=self._settings
            )
        except ConfigError:
            await self._discard()
            raise
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            await self._discard()
            raise self._unavailable("cannot open the store", e) from e
        try:
            codec.check_sealed(sealed, self._box)
        except Exception:
            await self._discard()
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="postgres-writer")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None and not self._writer.done():
            self._ops.put_nowait(None)
            await self._writer
        await self._discard()

    async def _fix_partitions(self, conn: asyncpg.Connection) -> None:
        """The first open fixes the number of partitions; a later different one is refused."""
        await conn.execute("INSERT INTO notify_meta (key, value) VALUES ('partitions', $1) ON CONFLICT DO NOTHING",
                           str(self.partitions))  # fmt: skip
        fixed = int(await conn.fetchval("SELECT value FROM notify_meta WHERE key = 'partitions'"))
        if fixed != self.partitions:
            raise ConfigError(f"NOTIFY_PARTITIONS is {self.partitions} but the store at {self._where} was created with"
                              f" {fixed}; partitions are fixed when a store is created")  # fmt: skip
        await conn.execute("INSERT INTO partition_owners (partition) SELECT generate_series(0, $1 - 1) ON CONFLICT DO NOTHING",
                           self.partitions)  # fmt: skip

    def fence_with(self, owner_id: str, fence: Fence) -> None:
        """From now on every write of a notify checks, in its transaction, that owner_id still
        holds the notify's partition at the epoch the fence has for it."""
        self._owner, self._fence = owner_id, fence

    @property
    def dsn(self) -> str:
        return self._dsn

    @property
    def server_settings(self) -> dict[str, str]:
        return dict(self._settings)

    async def ownership_view(self) -> tuple[dict[int, str], list[tuple[str, str]]]:
        """read_ownership on the pool (routing's view between ownership ticks)."""
        return await self._read(read_ownership)

    def parts(self, notify_ids) -> frozenset[int]:
        return frozenset(partition_of(i, self.partitions) for i in notify_ids)

    # --- plumbing -------------------------------------------------------

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self._dsn, timeout=self._timeout, server_settings=self._settings)

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        pool, self._pool = self._pool, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except _CLOSE_ERRORS as e:  # already gone, or the server does not answer
                log.debug("closing the writer connection: %s", e)
                conn.terminate()
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except _CLOSE_ERRORS as e:
                log.debug("closing the read pool: %s", e)
                pool.terminate()

    def _unavailable(self, what: str, e: BaseException) -> Unavailable:
        detail = f"{type(e).__name__}: {e}"
        if self._secret:
            detail = detail.replace(self._secret, "***")
        return Unavailable(f"PostgreSQL store at {self._where}: {what} ({detail})")

    async def _write_loop(self) -> None:
        try:
            while (op := await self._ops.get()) is not None:
                batch = [op]
                stop = False
                while len(batch) < MAX_GROUP and not self._ops.empty():
                    nxt = self._ops.get_nowait()
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                await self._run_group(batch)
                if stop:
                    break
        finally:  # cancelled or stopped: nobody may wait forever
            while not self._ops.empty():
                if (left := self._ops.get_nowait()) is not None:
                    _settle(left[1], None, Unavailable("store is closed"))

    async def _run_group(self, batch: list[tuple[Op, asyncio.Future, Parts]]) -> None:
        results: list[tuple[asyncio.Future, Any, BaseException | None]] = []
        conn = None
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self._connect()
            conn = self._conn
            async with conn.transaction():
                owned = await self._check_fence(conn, batch)
                for fn, fut, parts in batch:
                    if parts is not None and owned is not None and not parts <= owned:
                        results.append((fut, None, Fenced(sorted(parts - owned))))
                        continue
                    try:
                        async with conn.transaction():  # a savepoint
                            value = await fn(conn)
                        results.append((fut, value, None))
                    except Exception as e:  # one bad op must not undo its group; a lost connection does
                        if isinstance(e, _CONNECTION_ERRORS) or conn.is_closed():
                            raise
                        if isinstance(e, asyncpg.PostgresError):  # the server's trouble, not the caller's
                            e = self._unavailable("write failed", e)
                        results.append((fut, None, e))
            self.healthy = True
        except Exception as e:  # noqa: BLE001 -- whatever broke the group, every caller must hear of it
            what = "cannot connect" if conn is None else "lost its connection" if conn.is_closed() else "commit failed"
            failure = self._unavailable(what, e)
            self.healthy = False
            log.error("%s", failure)
            self._drop_writer_conn()
            results = [(fut, None, failure) for _, fut, _ in batch]
        except asyncio.CancelledError:
            self._drop_writer_conn()
            for _, fut, _ in batch:
                _settle(fut, None, Unavailable("store is closed"))
            raise
        for fut, value, err in results:
            _settle(fut, value, err)

    async def _check_fence(self, conn: asyncpg.Connection, batch) -> frozenset[int] | None:
        """The partitions this group may write: held in the fence now and, in this transaction,
        still ours at that epoch in partition_owners (locked FOR KEY SHARE until commit, so a
        takeover, which locks FOR UPDATE, waits for this commit or comes before it)."""
        if self._fence is None:
            return None
        wanted = frozenset().union(*(parts for _, _, parts in batch if parts))
        held = self._fence.held()
        ask = sorted(p for p in wanted if p in held)
        if not ask:
            return frozenset()
        rows = await conn.fetch(_FENCE, ask, [held[p] for p in ask], self._owner)
        return frozenset(r[0] for r in rows)

    def _drop_writer_conn(self) -> None:
        """The writer's connection is in an unknown state: the next group starts on a new one."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    def _write(self, fn: Op, parts: Parts = None) -> asyncio.Future:
        if self._closed or self._writer is None or self._writer.done():
            raise Unavailable("store is closed" if self._closed else "store is not open")
        fut = asyncio.get_running_loop().create_future()
        self._ops.put_nowait((fn, fut, parts))
        return fut

    async def _read(self, fn: Op) -> Any:
        if self._closed or self._pool is None:
            raise Unavailable("store is closed" if self._closed else "store is not open")
        try:  # whatever keeps a connection from opening (refused, not accepting, no login) is an outage
            conn = await self._pool.acquire()
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise self._unavailable("cannot connect", e) from e
        try:
            return await fn(conn)
        except _CONNECTION_ERRORS as e:
            raise self._unavailable("read failed", e) from e
        finally:
            await self._pool.release(conn)

    # --- operations -----------------------------------------------------

    async def probe(self) -> bool:
        """Whether a transaction commits now (health checks call it while unhealthy)."""
        try:
            await self._write(lambda conn: conn.execute("SELECT 1"))
        except Unavailable:
            return False
        return self.healthy

    async def insert(self, items: list[Notification], *, group: NewGroup | None = None) -> list[Notification]:
        if not items:
            return []

        async def op(conn: asyncpg.Connection) -> list[Notification]:
            got = await self._insert_rows(conn, [codec.to_row(n, self._box) for n in items], group)
            return [n if first is None else first for n, first in zip(items, got)]

        return await self._write(op, self.parts(n.id for n in items))

    async def insert_new(self, rows: list[tuple], *, group: NewGroup | None = None) -> list[Notification | None]:
        """Commits codec.new_row rows (encoding their specs once); for a request_id seen before,
        the first notify stands in the row's place (None: the row was inserted)."""
        if not rows:
            return []
        encoded = codec.encode_rows(rows, self._box)  # before the write: not inside its transaction and fence locks
        return await self._write(lambda conn: self._insert_rows(conn, encoded, group), self.parts(r[0] for r in rows))

    async def _insert_rows(self, conn: asyncpg.Connection, rows: list[tuple], group: NewGroup | None) -> list[Notification | None]:
        if group is not None and group.callback_url:
            await groups.register(conn, group)
        inserted = {r[0] for r in await conn.fetch(_INSERT, *[list(c) for c in zip(*rows)])}
        seen = [r[1] for r in rows if r[0] not in inserted]
        firsts: dict[str, Notification] = {}
        if seen:
            found = await conn.fetch(_BY_REQUEST_IDS, seen)
            firsts = {f["request_id"]: codec.from_row(f, self._box) for f in found}
        return [None if r[0] in inserted else firsts[r[1]] for r in rows]

    async def save_results(self, writes: list[ResultWrite], *, group_callback: GroupCallback | None = None) -> list[Notification]:
        states, attempts, follow_ups = codec.result_rows(writes, self._box)
        ending = codec.ended_groups(writes) if group_callback else []

        columns = [list(c) for c in zip(*states)] + ([list(c) for c in zip(*attempts)] if attempts else [[]] * len(_ATTEMPT_TYPES))

        async def op(conn: asyncpg.Connection) -> list[Notification]:
            await conn.execute(_SAVE_RESULTS, *columns)
            if follow_ups:
                await conn.fetch(_INSERT, *[list(c) for c in zip(*follow_ups)])
            return await groups.end(conn, ending, group_callback)

        return await self._write(op, self.parts(w.notify.id for w in writes)) if writes else []

    async def transition(
        self, notify_id: str, *, allowed: tuple[State, ...], state: State, due_ms: int | None,
        complete_ms: int | None, reset_budget: bool = False, group_callback: GroupCallback | None = None,
    ) -> tuple[bool, Notification | None, list[Notification]]:  # fmt: skip
        budget = "budget_base = attempt_count, first_attempt_ms = NULL," if reset_budget else ""
        sql = (
            f"UPDATE notifies SET {budget} state=$1, due_ms=$2, complete_ms=$3 WHERE id=$4 AND state = ANY($5::int[])"
            f" RETURNING {groups.SELECT}"
        )

        async def op(conn: asyncpg.Connection) -> tuple[bool, Notification | None, list[Notification]]:
            row = await conn.fetchrow(sql, int(state), due_ms, complete_ms, notify_id, [int(s) for s in allowed])
            changed, cur = await _changed_or_current(conn, row, notify_id, self._box)
            ends = [cur.spec.group_key] if changed and state.terminal and cur.spec.group_key else []
            return changed, cur, await groups.end(conn, ends, group_callback)

        return await self._write(op, self.parts([notify_id]))

    async def cancel_group(
        self, group_key: str, *, complete_ms: int, group_callback: GroupCallback | None = None,
        partitions: frozenset[int] | None = None,
    ) -> tuple[list[tuple[str, str]], list[Notification]]:  # fmt: skip
        where = f" AND {_in_partitions(self.partitions, 3)}" if partitions is not None else ""

        async def op(conn: asyncpg.Connection) -> tuple[list[tuple[str, str]], list[Notification]]:
            cancelled = await groups.cancel(conn, group_key, complete_ms, where, *([sorted(partitions)] if where else []))
            return cancelled, await groups.end(conn, [group_key] if cancelled else [], group_callback)

        return await self._write(op, frozenset(partitions) if partitions is not None else None)

    async def group(self, group_key: str) -> GroupStatus | None:
        return await self._read(lambda conn: groups.status(conn, group_key))

    async def update(
        self, notify_id: str, *, allowed: tuple[State, ...], spec: Spec, state: State, due_ms: int | None
    ) -> tuple[bool, Notification | None]:
        async def op(conn: asyncpg.Connection) -> tuple[bool, Notification | None]:
            marks = ",".join(str(int(s)) for s in allowed)
            row = await conn.fetchrow(
                f"UPDATE notifies SET spec='', spec_pb=$1, labels=$6, trigger_key=$2, state=$3, due_ms=$4 WHERE id=$5"
                f" AND state IN ({marks}) RETURNING {groups.SELECT}",
                codec.spec_to_bytes(spec, self._box), spec.trigger_key, int(state), due_ms, notify_id, codec.labels_json(spec),
            )  # fmt: skip
            return await _changed_or_current(conn, row, notify_id, self._box)

        return await self._write(op, self.parts([notify_id]))

    async def trigger(
        self, trigger_key: str, *, state: State, due_ms: int, partitions: frozenset[int] | None = None
    ) -> list[Notification]:
        where = f" AND {_in_partitions(self.partitions, 4)}" if partitions is not None else ""
        sql = (
            f"UPDATE notifies SET state=$1, due_ms=$2 WHERE trigger_key=$3 AND state={int(State.WAITING_TRIGGER)}{where}"
            f" RETURNING {groups.SELECT}"
        )
        args = [sorted(partitions)] if where else []

        async def op(conn: asyncpg.Connection) -> list[Notification]:
            rows = await conn.fetch(sql, int(state), due_ms, trigger_key, *args)
            return sorted((codec.from_row(r, self._box) for r in rows), key=lambda n: n.id)

        return await self._write(op, frozenset(partitions) if partitions is not None else None)

    async def get(self, notify_id: str) -> Notification | None:
        async def op(conn: asyncpg.Connection) -> Notification | None:
            row = await conn.fetchrow(_BY_ID, notify_id)
            if row is None:
                return None
            n = codec.from_row(row, self._box)
            rows = await conn.fetch(
                f"SELECT {codec.ATTEMPT_COLUMNS} FROM attempts WHERE notify_id=$1 ORDER BY number, seq", notify_id
            )
            if rows:  # else it keeps NO_ATTEMPTS
                n.attempts = [codec.attempt_from_row(r) for r in rows]
            return n

        return await self._read(op)

    async def load_due(
        self, *, after: tuple[int, str], until_ms: int, limit: int, partitions: frozenset[int] | None = None
    ) -> list[Notification]:
        if partitions is None:
            rows = await self._write(lambda conn: conn.fetch(_LOAD_DUE, after[0], after[1], until_ms, limit))
        else:
            sql = _LOAD_DUE.replace(" ORDER BY", f" AND {_in_partitions(self.partitions, 5)} ORDER BY")
            rows = await self._write(lambda conn: conn.fetch(sql, after[0], after[1], until_ms, limit, sorted(partitions)))
        return [codec.from_row(r, self._box) for r in rows]

    async def blocked_heads(self, partitions: frozenset[int] | None = None) -> list[tuple[str, str]]:
        if partitions is None:
            rows = await self._write(lambda conn: conn.fetch(_BLOCKED))
        else:
            sql = f"{_BLOCKED} AND {_in_partitions(self.partitions, 1)}"
            rows = await self._write(lambda conn: conn.fetch(sql, sorted(partitions)))
        return [(r[0], r[1]) for r in rows]

    async def counts(self) -> dict[tuple[str, State], int]:
        rows = await self._read(lambda conn: conn.fetch("SELECT queue, state, COUNT(*) FROM notifies GROUP BY queue, state"))
        return {(q, State(s)): c for q, s, c in rows}

    async def save_queue(self, q: QueueConfig, fields: Iterable[str] = QUEUE_FIELDS) -> QueueConfig:
        sql = ("INSERT INTO queues (name, max_concurrent, rate, burst, paused) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name)"
               f" DO UPDATE SET {queue_columns(fields)} RETURNING name, max_concurrent, rate, burst, paused")  # fmt: skip
        row = await self._write(lambda conn: conn.fetchrow(sql, q.name, q.max_concurrent, q.rate, q.burst, q.paused))
        return QueueConfig(*row)

    async def load_queues(self) -> list[QueueConfig]:
        sql = "SELECT name, max_concurrent, rate, burst, paused FROM queues ORDER BY name"
        rows = await self._write(lambda conn: conn.fetch(sql))
        return [QueueConfig(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def list(self, f: ListFilter, *, after_id: str, limit: int) -> list[Notification]:
        where: list[str] = ["id > $1"]
        args: list[object] = [after_id]
        for column, value in (("queue", f.queue), ("trigger_key", f.trigger_key), ("ordering_key", f.ordering_key),
                              ("group_key", f.group_key)):  # fmt: skip
            if value:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        if f.group_key:
            where.append("group_key <> ''")  # lets the planner use the partial index notifies_group
        if f.state is not None:
            args.append(int(f.state))
            where.append(f"state = ${len(args)}")
        if f.label_key:  # a scan, bounded by the other filters and the page
            args.append(f.label_key)
            label = f"({_LABELS} ->> ${len(args)})"
            if f.label_value is None:
                where.append(f"{label} IS NOT NULL")
            else:
                args.append(f.label_value)
                where.append(f"{label} = ${len(args)}")
        args.append(limit)
        sql = f"SELECT {groups.SELECT} FROM notifies WHERE {' AND '.join(where)} ORDER BY id LIMIT ${len(args)}"
        rows = await self._read(lambda conn: conn.fetch(sql, *args))
        return [codec.from_row(r, self._box) for r in rows]


async def _changed_or_current(conn: asyncpg.Connection, updated, notify_id: str, box: SecretBox | None) -> tuple[bool, Notification | None]:
    """(True, the updated row) or, when the update matched nothing, (False, the row as it is)."""
    if updated is not None:
        return True, codec.from_row(updated, box)
    row = await conn.fetchrow(_BY_ID, notify_id)
    return False, codec.from_row(row, box) if row else None


def _settle(fut: asyncio.Future, value: Any, err: BaseException | None) -> None:
    if fut.done():
        return
    if err is not None:
        fut.set_exception(err)
    else:
        fut.set_result(value)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _describe(dsn: str) -> tuple[str, str]:
    """'host[:port]/database' for messages, and the password to keep out of them."""
    parts = urlsplit(dsn)
    hosts = parts.netloc.rpartition("@")[2] or parse_qs(parts.query).get("host", ["localhost"])[0]
    return f"{hosts}{parts.path or '/'}", unquote(parts.password or "")
