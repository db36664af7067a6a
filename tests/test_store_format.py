"""The spec column: StoredSpec bytes now, JSON in stores written before. A store whose rows
were written the old way (JSON specs, secret headers sealed under "hs", a row nobody can
decode) opens as it is on SQLite and PostgreSQL, reads back every field, keeps its secrets
sealed and checked at open, filters by label, and reports the broken row instead of raising."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from notifyagent.common.sealing import SecretBox, SecretKeyError, secret_names
from notifyagent.scheduler.engine.model import ListFilter, Notification, Request, RetryPolicy, Spec, State, Success
from notifyagent.scheduler.store import codec
from notifyagent.scheduler.store.postgres import PostgresStore
from notifyagent.scheduler.store.sqlite import SqliteStore
from notifyagent.v1 import storage_pb2
from test_store_contract import PG_DSN, postgres_admin

KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
NAMES = secret_names("X-Signature")
SECRETS = {"Authorization": "Bearer old-SEKRIT-1", "X-Signature": "old-SIG-2"}


def old_spec_json(spec: Spec, box: SecretBox | None = None) -> str:
    """The spec column as releases before StoredSpec wrote it (their codec.spec_to_json)."""
    r, p, s = spec.request, spec.retry, spec.success
    headers, sealed = box.seal(r.headers) if box is not None and r.headers else (r.headers, "")
    doc: dict[str, Any] = {
        "m": r.method, "u": r.url, "h": headers, "b": base64.b64encode(r.body).decode() if r.body else "",
        "j": r.json_body, "f": r.form, "at": spec.deliver_at_ms,
        "r": [p.max_attempts, p.min_backoff, p.max_backoff, p.multiplier, p.max_retry_duration, list(p.retry_codes)],
        "s": [list(s.status_codes), s.body_contains, *([True] if s.mismatch_final else [])],
        "ff": spec.fire_and_forget, "t": spec.timeout, "x": spec.expire_at_ms, "cb": spec.callback_url, "l": spec.labels,
    }  # fmt: skip
    if sealed:
        doc["hs"] = sealed
    if spec.created_by:
        doc["by"] = spec.created_by
    return json.dumps(doc, separators=(",", ":"))


def nid(i: int) -> str:
    return f"01J{i:023d}"


RICH = Spec(
    request=Request(method="PUT", url="https://example.com/rich", headers={**SECRETS, "X-Trace": "t-1"}, body=b"\x00\xffbin"),
    deliver_at_ms=5_000, queue="q1", ordering_key="ok", retry=RetryPolicy(7, 1.5, 60.0, 3.0, 3600.0, (500, 503)),
    success=Success((200, 201), "ok", True), fire_and_forget=False, timeout=12.5, expire_at_ms=9_000_000,
    callback_url="https://example.com/cb", labels={"team": "payments", "env": "prod"}, created_by="svc-a",
)  # fmt: skip
PLAIN = Spec(request=Request(method="POST", url="https://example.com/plain", json_body='{"a": 1}'), labels={"team": "ops"})
FORM = Spec(request=Request(method="GET", url="https://example.com/form", form={"k": "v"}), trigger_key="go")

# (id, state, due_ms, spec) of the rows the old release wrote; nid(3) is a row nobody can decode
OLD_ROWS = [(nid(1), State.SCHEDULED, 5_000, RICH), (nid(2), State.PENDING, 1_000, PLAIN), (nid(4), State.WAITING_TRIGGER, None, FORM)]


class OldStore:
    """A store at one place, with tables as the release before StoredSpec left them."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind, self.path = kind, tmp_path / "notify.db"
        self.schema = f"t_{uuid.uuid4().hex[:16]}"
        self.admin = None

    def build(self, box: SecretBox | None):
        if self.kind == "sqlite":
            return SqliteStore(self.path, secrets=box)
        return PostgresStore(PG_DSN, schema=self.schema, pool_size=1, secrets=box)

    async def write_old_rows(self, box: SecretBox) -> None:
        """Creates the tables (then takes them back to the old columns) and writes JSON rows."""
        store = self.build(box)
        await store.open()
        await store.close()
        rows = [(i, "", int(st), s.queue, s.ordering_key, s.trigger_key, due, 500, None, 0, 0, None, old_spec_json(s, box), "")
                for i, st, due, s in OLD_ROWS]  # fmt: skip
        rows.append((nid(3), "", int(State.PENDING), "default", "", "", 0, 500, None, 0, 0, None, '{"m": broken', ""))
        cols = codec.COLUMNS
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path)) as conn:
                conn.execute("ALTER TABLE notifies DROP COLUMN labels")
                conn.executemany(f"INSERT INTO notifies ({cols}) VALUES ({', '.join('?' * 14)})", rows)
                conn.commit()
            return
        self.admin = await postgres_admin()
        t = f'"{self.schema}".notifies'
        await self.admin.execute(f"ALTER TABLE {t} DROP COLUMN spec_pb, DROP COLUMN labels, ALTER COLUMN spec DROP DEFAULT")
        await self.admin.executemany(f"INSERT INTO {t} ({cols}) VALUES ({', '.join(f'${i}' for i in range(1, 15))})", rows)

    async def raw_spec(self, notify_id: str) -> bytes | str:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path)) as conn:
                return conn.execute("SELECT spec FROM notifies WHERE id = ?", (notify_id,)).fetchone()[0]
        row = dict(await self.admin.fetchrow(f'SELECT * FROM "{self.schema}".notifies WHERE id = $1', notify_id))
        return row["spec_pb"] if row.get("spec_pb") is not None else row["spec"]

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            await self.admin.close()


@pytest.fixture(params=KINDS)
async def old(request, tmp_path):
    o = OldStore(request.param, tmp_path)
    try:
        yield o
    finally:
        await o.close()


async def test_a_store_with_json_specs_opens_and_reads_every_field_and_sealed_secret(old) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    await old.write_old_rows(SecretBox(key, NAMES))
    assert isinstance(await old.raw_spec(nid(1)), str) and "old-SEKRIT-1" not in await old.raw_spec(nid(1))
    for box, why in [(SecretBox(base64.urlsafe_b64encode(os.urandom(32)).decode(), NAMES), "cannot decrypt"), (None, "is not set")]:
        with pytest.raises(SecretKeyError, match=why):  # the JSON rows' sealed secrets are checked at open
            await old.build(box).open()
    store = old.build(SecretBox(key, NAMES))
    await store.open()
    try:
        for i, state, due, spec in OLD_ROWS:
            got = await store.get(i)
            assert (got.state, got.due_ms, got.spec, got.unreadable) == (state, due, spec, "")
        broken = await store.get(nid(3))
        assert broken.unreadable.startswith("stored row cannot be decoded") and broken.state == State.PENDING
        listed = await store.list(ListFilter(), after_id="", limit=10)
        assert [n.id for n in listed] == [nid(1), nid(2), nid(3), nid(4)] and listed[2].unreadable
        due = await store.load_due(after=(-1, ""), until_ms=10_000, limit=10)
        assert [n.id for n in due] == [nid(3), nid(2), nid(1)]
        # new rows beside the old ones: StoredSpec bytes; the label filter sees both formats
        await store.insert([Notification(id=nid(5), spec=PLAIN, state=State.PENDING, create_ms=600, due_ms=600)])
        assert isinstance(await old.raw_spec(nid(5)), bytes)
        teams = await store.list(ListFilter(label_key="team"), after_id="", limit=10)
        assert [n.id for n in teams] == [nid(1), nid(2), nid(5)]
        ops = await store.list(ListFilter(label_key="team", label_value="ops"), after_id="", limit=10)
        assert [n.id for n in ops] == [nid(2), nid(5)]
        # an update rewrites an old row in the new format, its secrets sealed again
        changed, cur = await store.update(nid(1), allowed=(State.SCHEDULED,), spec=RICH, state=State.SCHEDULED, due_ms=5_000)
        assert changed and cur.spec == RICH
        raw = await old.raw_spec(nid(1))
        assert isinstance(raw, bytes) and b"old-SEKRIT-1" not in raw and b"old-SIG-2" not in raw and b"t-1" in raw
        assert storage_pb2.StoredSpec.FromString(raw).sealed_headers
        assert (await store.get(nid(1))).spec == RICH
        assert [n.id for n in await store.list(ListFilter(label_key="env", label_value="prod"), after_id="", limit=10)] == [nid(1)]
    finally:
        await store.close()
    again = old.build(SecretBox(key, NAMES))  # the new rows' sealed secrets are checked at open too
    await again.open()
    await again.close()
    with pytest.raises(SecretKeyError):
        await old.build(None).open()


def test_stored_spec_bytes_round_trip_and_are_what_protobuf_encodes() -> None:
    box = SecretBox(base64.urlsafe_b64encode(os.urandom(32)).decode(), NAMES)
    for spec in (RICH, PLAIN, FORM, Spec(request=Request(method="GET", url="https://example.com/" + "x" * 300))):
        for b in (None, box):
            data = codec.spec_to_bytes(spec, b)
            parsed = storage_pb2.StoredSpec.FromString(data)
            assert parsed.SerializeToString() == data or storage_pb2.StoredSpec.FromString(parsed.SerializeToString()) == parsed
            assert data[:1] != b"{"  # the format marker: JSON specs start with "{"
            back = codec.spec_from_column(data, trigger_key=spec.trigger_key, ordering_key=spec.ordering_key,
                                          queue=spec.queue, box=b)  # fmt: skip
            assert back == spec
            sealed = b is not None and any(k.lower() in NAMES for k in spec.request.headers)
            assert bool(parsed.sealed_headers) == sealed and data.startswith(b"\x0a") == sealed


@pytest.mark.parametrize("kind", ["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_insert_new_stores_the_message_once_and_answers_the_first_of_a_request_id(kind, tmp_path) -> None:
    from notifyagent.scheduler.api import convert
    from notifyagent.scheduler.engine.validate import Incoming
    from notifyagent.v1 import notify_pb2 as pb
    from test_store_contract import backing

    def row(i: int, request_id: str = "") -> tuple:
        m = pb.Notify(request=pb.HttpRequest(url=f"https://example.com/{i}", headers={"Cookie": "c-SEKRIT", "X-T": "t"}),
                      delay={"seconds": 60}, labels={"n": str(i)}, attempts=[pb.Attempt(number=3)], state=pb.STATE_FAILED)
        new: Incoming = convert.incoming(m, request_id, now_ms=1_000, created_by="svc")
        return codec.new_row(new, nid(i), State.SCHEDULED, 61_000, 1_000)

    async with backing(kind, tmp_path) as open_one:
        store = await open_one()
        got = await store.insert_new([row(1, "r1"), row(2), row(3, "r1")])
        assert got[:2] == [None, None] and got[2].id == nid(1), "the first notify with that request_id"
        again = await store.insert_new([row(4, "r1")])
        assert again[0].id == nid(1)
        n = await store.get(nid(1))
        assert (n.state, n.due_ms, n.create_ms, n.request_id) == (State.SCHEDULED, 61_000, 1_000, "r1")
        assert n.spec.deliver_at_ms == 61_000 and n.spec.created_by == "svc" and n.spec.request.method == "POST"
        assert n.spec.request.headers == {"Cookie": "c-SEKRIT", "X-T": "t"} and n.spec.labels == {"n": "1"} and not n.attempts
        assert [x.id for x in await store.list(ListFilter(label_key="n", label_value="2"), after_id="", limit=10)] == [nid(2)]
        assert await store.get(nid(3)) is None and await store.get(nid(4)) is None


async def test_sqlite_creates_that_wait_together_commit_as_one_statement_and_a_bad_one_fails_alone(tmp_path) -> None:
    """CreateNotify calls queued while the writer is busy (a group): their rows go in as one statement; one
    that cannot (an id taken) fails alone, and the ops around it (a request_id, a group) still commit in order."""
    import asyncio
    import threading
    from notifyagent.scheduler.api import convert
    from notifyagent.scheduler.engine.model import NewGroup
    from notifyagent.v1 import notify_pb2 as pb
    from test_store_contract import nid

    def row(i: int, request_id: str = "") -> tuple:
        m = pb.Notify(request=pb.HttpRequest(url=f"https://example.com/{i}"), delay={"seconds": 60})
        return codec.new_row(convert.incoming(m, request_id, now_ms=1_000), nid(i), State.SCHEDULED, 61_000, 1_000)

    store = SqliteStore(tmp_path / "n.db")
    await store.open()
    try:
        await store.insert_new([row(1)])
        for _ in range(2):  # the second round: a run that fails as one is taken apart, then the next run joins up again
            busy = threading.Event()
            store._write(lambda conn: busy.wait(5))  # noqa: B023 - the writer is busy: what follows waits as one group
            base = 10 if _ == 0 else 30
            calls = [store.insert_new([row(base), row(base + 1)]), store.insert_new([row(1)]), store.insert_new([row(base + 2)]),
                     store.insert_new([row(base + 3, f"r{base}")]), store.insert_new([row(base + 4)]),
                     store.insert_new([row(base + 5)], group=NewGroup(f"g{base}", "")), store.insert_new([row(base + 6)]),
                     store.insert_new([row(base + 7)])]  # fmt: skip
            tasks = [asyncio.ensure_future(c) for c in calls]
            await asyncio.sleep(0.05)
            busy.set()
            got = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(got[1], sqlite3.IntegrityError), "the id is taken"
            assert [g for i, g in enumerate(got) if i != 1] == [[None, None], [None], [None], [None], [None], [None], [None]]
            for i in range(8):
                n = await store.get(nid(base + i))
                assert n is not None and n.spec.request.url == f"https://example.com/{base + i}"
        assert (await store.get(nid(1))).spec.request.url == "https://example.com/1"
        again = await store.insert_new([row(50, "r10")])
        assert again[0].id == nid(13), "the request_id stored inside the group"
    finally:
        await store.close()


async def test_sqlite_a_group_of_creates_alone_with_a_bad_one_commits_the_rest(tmp_path) -> None:
    """A group made only of creates (as unary CreateNotify calls make under load): when one of them
    cannot go in (an id taken), that one fails alone and the others commit."""
    import asyncio
    import threading
    from notifyagent.scheduler.api import convert
    from notifyagent.v1 import notify_pb2 as pb
    from test_store_contract import nid

    def row(i: int) -> tuple:
        m = pb.Notify(request=pb.HttpRequest(url=f"https://example.com/{i}"), delay={"seconds": 60})
        return codec.new_row(convert.incoming(m, "", now_ms=1_000), nid(i), State.SCHEDULED, 61_000, 1_000)

    store = SqliteStore(tmp_path / "n.db")
    await store.open()
    try:
        await store.insert_new([row(1)])
        busy = threading.Event()
        store._write(lambda conn: busy.wait(5))
        tasks = [asyncio.ensure_future(store.insert_new(rows)) for rows in ([row(2), row(3)], [row(4)], [row(1)], [row(5)])]
        await asyncio.sleep(0.05)
        busy.set()
        got = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(got[2], sqlite3.IntegrityError) and [got[0], got[1], got[3]] == [[None, None], [None], [None]]
        assert [(await store.get(nid(i))).spec.request.url for i in range(1, 6)] == [f"https://example.com/{i}" for i in range(1, 6)]
        assert await store.insert_new([row(6), row(7)]) == [None, None], "the writer goes on"
    finally:
        await store.close()


async def test_sqlite_creates_that_keep_arriving_join_one_group_and_a_lone_one_does_not_wait(tmp_path, monkeypatch) -> None:
    """Under concurrent writes the writer waits, tick by tick, while creates keep arriving, and commits
    them as one group; after a group of one it does not wait at all; a close while it waits still
    commits what came. (Ticks are stretched here so the test does not depend on the machine's pace.)"""
    import asyncio
    import threading
    import time
    from notifyagent.scheduler.api import convert
    from notifyagent.scheduler.store import sqlite as sqlite_store
    from notifyagent.v1 import notify_pb2 as pb
    from test_store_contract import nid

    monkeypatch.setattr(sqlite_store, "GATHER_TICK_S", 0.2)
    monkeypatch.setattr(sqlite_store, "GATHER_MAX_S", 5.0)

    def row(i: int) -> tuple:
        m = pb.Notify(request=pb.HttpRequest(url=f"https://example.com/{i}"), delay={"seconds": 60})
        return codec.new_row(convert.incoming(m, "", now_ms=1_000), nid(i), State.SCHEDULED, 61_000, 1_000)

    store = SqliteStore(tmp_path / "n.db")
    await store.open()
    sizes: list[int] = []
    gathers: list[int] = []
    run_group, gather = store._run_group, store._gather
    store._run_group = lambda conn, batch: (sizes.append(len(batch)), run_group(conn, batch))[1]
    store._gather = lambda: (gathers.append(len(sizes)), gather())[1]
    loop = asyncio.get_running_loop()
    try:
        assert await store.insert_new([row(1)]) == [None]
        assert await store.insert_new([row(2)]) == [None]
        assert gathers == [], "after groups of one, a create goes at once"

        async def two_at_once(a: int, b: int) -> None:
            """Two creates queued behind a busy writer: the last group held two ops."""
            busy = threading.Event()
            store._write(lambda conn: busy.wait(5))
            held = [asyncio.ensure_future(store.insert_new([row(i)])) for i in (a, b)]
            await asyncio.sleep(0.05)
            busy.set()
            await asyncio.gather(*held)

        await two_at_once(3, 4)
        await store._write(lambda conn: None)
        assert gathers == [], "only creates wait for company (results, cancels and the rest go at once)"
        await two_at_once(5, 6)

        def feed(start: int, then_close: bool = False) -> list:
            """Creates one every 20 ms (well inside a tick) from the loop, then maybe closes the store;
            the futures of the creates (and of the close, last)."""
            out = []
            for i in range(start, start + 8):
                out.append(asyncio.run_coroutine_threadsafe(store.insert_new([row(i)]), loop))
                time.sleep(0.02)
            if then_close:
                out.append(asyncio.run_coroutine_threadsafe(store.close(), loop))
            return out

        before = len(sizes)
        fed = [await asyncio.wrap_future(f) for f in await asyncio.to_thread(feed, 10)]
        assert fed == [[None]] * 8
        assert sizes[before:] == [8], "the creates that kept arriving committed as one group"
        assert len(gathers) == 1

        await two_at_once(7, 8)
        *closing, closed = await asyncio.to_thread(feed, 20, True)
        await asyncio.wrap_future(closed)
        assert [await asyncio.wrap_future(f) for f in closing] == [[None]] * 8, "what came while it waited was committed"
    finally:
        await store.close()
    again = SqliteStore(tmp_path / "n.db")
    await again.open()
    try:
        for i in [*range(1, 9), *range(10, 18), *range(20, 28)]:
            assert (await again.get(nid(i))).spec.request.url == f"https://example.com/{i}"
    finally:
        await again.close()


@pytest.mark.parametrize("n", [0, 1, 3, 63, 64, 65, 131, 1000])
def test_sqlite_insert_many_stores_the_rows_executemany_stores(tmp_path, n) -> None:
    from notifyagent.scheduler.store import sqlite as sq

    def table(name: str, insert) -> list[tuple]:
        conn = sqlite3.connect(tmp_path / f"{name}.db", isolation_level=None)
        conn.executescript(sq.SCHEMA)
        conn.executescript(sq.INDEXES)
        insert(conn, [(f"01J{i:023d}", f"r{i}" if i % 3 else "", i % 8, "q", "", f"t{i % 2}", i * 7 if i % 5 else None, i,
                       None, 0, 0, None, bytes([i % 256]) * (i % 40), "", "") for i in range(n)])  # fmt: skip
        return conn.execute(f"SELECT {codec.INSERT_COLUMNS}, typeof(spec), typeof(due_ms) FROM notifies ORDER BY id").fetchall()

    assert table("many", sq.insert_many) == table("one_by_one", lambda conn, rows: conn.executemany(sq._INSERT, rows))
