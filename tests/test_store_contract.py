"""Store behaviour: one contract suite over every adapter, then adapter specifics.

The contract runs against SqliteStore (a file in tmp_path), MemoryStore (the
in-memory twin the engine tests use) and PostgresStore on
the PostgreSQL at NOTIFY_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test),
each test in a fresh schema dropped afterwards. Without that server the
PostgreSQL cases are skipped locally and fail when CI is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from notifyagent.scheduler.engine.errors import FailedPrecondition, Unavailable
from notifyagent.scheduler.engine.model import (
    AttemptRecord,
    GroupStatus,
    ListFilter,
    NO_ATTEMPTS,
    NewGroup,
    QueueConfig,
    Notification,
    Request,
    RetryPolicy,
    Spec,
    State,
    Success,
)
from notifyagent.scheduler.store.memory import MemoryData, MemoryStore
from notifyagent.scheduler.store.postgres import PostgresStore
from notifyagent.scheduler.store.sqlite import SqliteStore
from notifyagent.scheduler.store.port import ResultWrite, Store

PG_DSN = os.environ.get("NOTIFY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ADAPTERS = ["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.postgres)]
ON_DISK = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]  # stores with migrations
START = (-1, "")  # a load_due cursor before everything


def by_state(counts: dict[tuple[str, State], int]) -> dict[State, int]:
    out: dict[State, int] = {}
    for (_, state), n in counts.items():
        out[state] = out.get(state, 0) + n
    return out

OpenStore = Callable[[], Awaitable[Store]]


async def postgres_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        where = urlsplit(PG_DSN).netloc.rpartition("@")[2]  # never the password
        reason = f"PostgreSQL at NOTIFY_TEST_POSTGRES ({where}) is unreachable: {type(e).__name__}: {e}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must not skip the PostgreSQL store)")
        pytest.skip(reason)


@contextlib.asynccontextmanager
async def backing(kind: str, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores that share one backing database (a file, or a schema of its own)."""
    opened: list[Store] = []
    admin = schema = None
    if kind == "sqlite":
        def build() -> Store:
            return SqliteStore(tmp_path / "notify.db")
    elif kind == "memory":
        data = MemoryData()

        def build() -> Store:
            return MemoryStore(data)
    else:
        admin = await postgres_admin()
        schema = f"t_{uuid.uuid4().hex[:16]}"

        def build() -> Store:
            return PostgresStore(PG_DSN, schema=schema, pool_size=2)

    async def open_one() -> Store:
        store = build()
        await store.open()
        opened.append(store)
        return store

    try:
        yield open_one
    finally:
        for store in opened:
            await store.close()
        if admin is not None:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await admin.close()


@pytest.fixture(params=ADAPTERS)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    async with backing(request.param, tmp_path) as open_one:
        yield open_one


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()


def nid(i: int) -> str:
    return f"01J{i:023d}"


def notify(
    i: int, *, state: State = State.PENDING, due_ms: int | None = 1_000, request_id: str = "", queue: str = "default",
    ordering_key: str = "", trigger_key: str = "", group_key: str = "",
) -> Notification:
    spec = Spec(
        request=Request("POST", f"https://example.com/hook/{i}"), queue=queue, ordering_key=ordering_key,
        trigger_key=trigger_key, group_key=group_key,
    )  # fmt: skip
    return Notification(id=nid(i), spec=spec, state=state, create_ms=500, request_id=request_id, due_ms=due_ms)


def rich_notify() -> Notification:
    """A notify that sets every field, with values that trip naive encodings."""
    spec = Spec(
        request=Request(
            method="PUT",
            url="https://example.com/hook?a=1&b=é",
            headers={"X-Trace": "abc", "Content-Type": "application/octet-stream", "X-Ünï": "ok"},
            body=bytes(range(256)) + b"\x00\x00",
            json_body='{"b": 2, "a": [1.50, "\\u00e9"]}',
            form={"name": "a b&c", "emoji": "🙂"},
        ),
        deliver_at_ms=1_700_000_000_123,
        trigger_key="",
        ordering_key="customer-42",
        queue="billing",
        retry=RetryPolicy(max_attempts=7, min_backoff=1.5, max_backoff=600.0, multiplier=3.0,
                          max_retry_duration=3600.0, retry_codes=(429, 503)),
        success=Success(status_codes=(200, 202), body_contains='"ok":true'),
        fire_and_forget=True,
        timeout=12.5,
        expire_at_ms=1_700_000_900_000,
        callback_url="https://example.com/callback",
        labels={"team": "payments", "env": "prod"},
        group_key="order-42",
    )  # fmt: skip
    return Notification(
        id=nid(1), spec=spec, state=State.SCHEDULED, create_ms=1_699_999_999_000, request_id="req-rich",
        due_ms=1_700_000_000_123, complete_ms=None, attempt_count=0, budget_base=0, first_attempt_ms=None,
    )  # fmt: skip


def attempt(number: int, *, code: int = 503, success: bool = False, snippet: bytes = b"busy") -> AttemptRecord:
    start = 2_000 + number * 100
    error = "" if code else "timeout"
    return AttemptRecord(number, start, start + 42, f"dispatcher-{number}", code, error, success, snippet)


def result(n: Notification, *, state: State, attempt_record: AttemptRecord | None, due_ms: int | None = None,
           complete_ms: int | None = None) -> ResultWrite:
    after = dataclasses.replace(
        n, state=state, due_ms=due_ms, complete_ms=complete_ms, attempt_count=n.attempt_count + 1,
        first_attempt_ms=n.first_attempt_ms or 2_000, attempts=[],
    )  # fmt: skip
    return ResultWrite(after, attempt_record)


# --- insert and get ------------------------------------------------------


async def test_insert_then_get_round_trips_every_field(store: Store) -> None:
    n = rich_notify()
    assert await store.insert([n]) == [rich_notify()]
    assert await store.get(n.id) == rich_notify()


async def test_insert_returns_the_given_objects_for_new_notifies(store: Store) -> None:
    items = [notify(1), notify(2, request_id="r2")]
    got = await store.insert(items)
    assert all(a is b for a, b in zip(got, items, strict=True))


async def test_get_returns_attempts_ordered_by_number_with_binary_snippets(store: Store) -> None:
    n = rich_notify()
    await store.insert([n])
    first = attempt(1, snippet=b"\x00\xffnot utf-8\x80")
    second = attempt(2, code=0, snippet=b"")
    third = attempt(3, code=200, success=True, snippet=b"ok")
    await store.save_results([result(n, state=State.RETRY_WAIT, attempt_record=first, due_ms=5_000)])
    await store.save_results([result(n, state=State.RETRY_WAIT, attempt_record=third, due_ms=6_000)])
    await store.save_results([result(n, state=State.SUCCEEDED, attempt_record=second, complete_ms=7_000)])
    got = await store.get(n.id)
    assert got is not None
    assert got.attempts == [first, second, third]


async def test_get_of_an_unknown_id_is_none(store: Store) -> None:
    assert await store.get(nid(404)) is None


async def test_duplicate_request_id_returns_the_first_notify_and_keeps_one_row(store: Store) -> None:
    await store.insert([notify(1, request_id="same")])
    again = await store.insert([notify(2, request_id="same", queue="other")])
    assert [n.id for n in again] == [nid(1)]
    assert again[0].spec.queue == "default"
    assert await store.get(nid(2)) is None
    assert by_state(await store.counts()) == {State.PENDING: 1}


async def test_duplicate_request_id_within_one_batch_returns_the_first_for_both(store: Store) -> None:
    got = await store.insert([notify(1, request_id="same"), notify(2), notify(3, request_id="same")])
    assert [n.id for n in got] == [nid(1), nid(2), nid(1)]
    assert await store.get(nid(3)) is None
    assert by_state(await store.counts()) == {State.PENDING: 2}


async def test_empty_request_ids_never_collide(store: Store) -> None:
    await store.insert([notify(1), notify(2)])
    await store.insert([notify(3)])
    assert by_state(await store.counts()) == {State.PENDING: 3}


async def test_concurrent_inserts_all_commit(store: Store) -> None:
    batches = await asyncio.gather(*(store.insert([notify(i, request_id=f"r{i}")]) for i in range(200)))
    assert [b[0].id for b in batches] == [nid(i) for i in range(200)]
    assert by_state(await store.counts()) == {State.PENDING: 200}
    assert len(await store.list(ListFilter(), after_id="", limit=1000)) == 200


async def test_one_failing_write_does_not_undo_the_writes_grouped_with_it(store: Store) -> None:
    await store.insert([notify(1)])
    outcomes = await asyncio.gather(
        store.insert([notify(2)]), store.insert([notify(1)]), store.insert([notify(3)]), return_exceptions=True
    )
    assert [type(o) for o in (outcomes[0], outcomes[2])] == [list, list]
    assert isinstance(outcomes[1], Exception)  # the id is taken
    assert by_state(await store.counts()) == {State.PENDING: 3}


# --- results and transitions ---------------------------------------------


async def test_save_results_updates_state_and_appends_attempts(store: Store) -> None:
    a, b = notify(1), notify(2)
    await store.insert([a, b])
    await store.save_results([
        result(a, state=State.RETRY_WAIT, attempt_record=attempt(1), due_ms=9_000),
        result(b, state=State.SUCCEEDED, attempt_record=attempt(1, code=200, success=True), complete_ms=2_500),
    ])  # fmt: skip
    got_a, got_b = await store.get(a.id), await store.get(b.id)
    assert (got_a.state, got_a.due_ms, got_a.attempt_count) == (State.RETRY_WAIT, 9_000, 1)
    assert got_a.first_attempt_ms == 2_000
    assert (got_b.state, got_b.due_ms, got_b.complete_ms) == (State.SUCCEEDED, None, 2_500)
    assert got_a.attempts == [attempt(1)]
    assert got_b.attempts == [attempt(1, code=200, success=True)]


async def test_save_results_without_an_attempt_only_updates_the_notify(store: Store) -> None:
    n = notify(1)
    await store.insert([n])
    await store.save_results([result(n, state=State.FAILED, attempt_record=None, complete_ms=3_000)])
    got = await store.get(n.id)
    assert (got.state, got.complete_ms) == (State.FAILED, 3_000) and got.attempts is NO_ATTEMPTS  # shared, never appended to


async def test_save_results_of_an_empty_batch_changes_nothing(store: Store) -> None:
    n = notify(1)
    await store.insert([n])
    assert await store.save_results([]) == []
    got = await store.get(n.id)
    assert (got.state, got.attempts) == (n.state, NO_ATTEMPTS)


async def test_save_results_does_not_resurrect_a_cancelled_notify(store: Store) -> None:
    n = notify(1)
    await store.insert([n])
    await store.transition(n.id, allowed=(State.PENDING,), state=State.CANCELLED, due_ms=None, complete_ms=1_500)
    await store.save_results([result(n, state=State.SUCCEEDED, attempt_record=attempt(1, code=200, success=True),
                                     complete_ms=2_500)])  # fmt: skip
    got = await store.get(n.id)
    assert (got.state, got.complete_ms, got.attempt_count) == (State.CANCELLED, 1_500, 0)
    assert got.attempts == [attempt(1, code=200, success=True)]  # what happened is still recorded


async def test_transition_moves_a_notify_in_an_allowed_state(store: Store) -> None:
    await store.insert([notify(1, state=State.SCHEDULED, due_ms=5_000)])
    changed, cur, _ = await store.transition(
        nid(1), allowed=(State.SCHEDULED, State.PENDING), state=State.CANCELLED, due_ms=None, complete_ms=1_234
    )
    assert changed
    assert (cur.id, cur.state, cur.due_ms, cur.complete_ms) == (nid(1), State.CANCELLED, None, 1_234)
    assert (await store.get(nid(1))).state == State.CANCELLED


async def test_transition_leaves_a_notify_in_another_state_and_returns_it(store: Store) -> None:
    await store.insert([notify(1, state=State.SUCCEEDED, due_ms=None)])
    changed, cur, _ = await store.transition(
        nid(1), allowed=(State.FAILED, State.CANCELLED), state=State.PENDING, due_ms=9, complete_ms=None
    )
    assert not changed
    assert (cur.state, cur.due_ms) == (State.SUCCEEDED, None)
    assert (await store.get(nid(1))).state == State.SUCCEEDED


async def test_transition_of_an_unknown_id_returns_false_and_none(store: Store) -> None:
    assert await store.transition(
        nid(404), allowed=(State.PENDING,), state=State.CANCELLED, due_ms=None, complete_ms=1
    ) == (False, None, [])


async def test_transition_with_reset_budget_restarts_the_retry_budget(store: Store) -> None:
    n = notify(1)
    await store.insert([n])
    failed = dataclasses.replace(n, state=State.FAILED, due_ms=None, complete_ms=4_000, attempt_count=3,
                                 first_attempt_ms=2_000)  # fmt: skip
    await store.save_results([ResultWrite(failed, attempt(3))])
    changed, cur, _ = await store.transition(
        n.id, allowed=(State.FAILED, State.CANCELLED), state=State.PENDING, due_ms=5_000, complete_ms=None,
        reset_budget=True,
    )  # fmt: skip
    assert changed
    assert (cur.state, cur.due_ms, cur.complete_ms) == (State.PENDING, 5_000, None)
    assert (cur.attempt_count, cur.budget_base, cur.first_attempt_ms, cur.attempts_in_budget) == (3, 3, None, 0)
    assert (await store.get(n.id)).budget_base == 3


async def test_transition_without_reset_budget_keeps_the_budget(store: Store) -> None:
    n = notify(1)
    await store.insert([n])
    await store.save_results([ResultWrite(dataclasses.replace(n, state=State.FAILED, attempt_count=2,
                                                              first_attempt_ms=2_000), None)])  # fmt: skip
    _, cur, _ = await store.transition(n.id, allowed=(State.FAILED,), state=State.PENDING, due_ms=1, complete_ms=None)
    assert (cur.budget_base, cur.first_attempt_ms) == (0, 2_000)


# --- trigger -------------------------------------------------------------


async def test_trigger_moves_only_notifies_waiting_on_that_key_and_returns_them_by_id(store: Store) -> None:
    await store.insert([
        notify(3, state=State.WAITING_TRIGGER, due_ms=None, trigger_key="order-7"),
        notify(1, state=State.WAITING_TRIGGER, due_ms=None, trigger_key="order-7"),
        notify(2, state=State.WAITING_TRIGGER, due_ms=None, trigger_key="order-8"),
        notify(4, state=State.CANCELLED, due_ms=None, trigger_key="order-7"),
    ])  # fmt: skip
    fired = await store.trigger("order-7", state=State.SCHEDULED, due_ms=8_000)
    assert [(n.id, n.state, n.due_ms) for n in fired] == [
        (nid(1), State.SCHEDULED, 8_000),
        (nid(3), State.SCHEDULED, 8_000),
    ]
    assert (await store.get(nid(2))).state == State.WAITING_TRIGGER
    assert (await store.get(nid(4))).state == State.CANCELLED
    assert await store.trigger("order-7", state=State.PENDING, due_ms=9_000) == []


# --- list ----------------------------------------------------------------


async def test_list_filters_by_state_queue_trigger_key_and_ordering_key(store: Store) -> None:
    await store.insert([
        notify(1, queue="a", ordering_key="k1"),
        notify(2, queue="b", ordering_key="k1"),
        notify(3, queue="a", state=State.WAITING_TRIGGER, due_ms=None, trigger_key="t"),
        notify(4, queue="a", ordering_key="k2", state=State.SCHEDULED),
    ])  # fmt: skip

    async def ids(f: ListFilter) -> list[str]:
        return [n.id for n in await store.list(f, after_id="", limit=100)]

    assert await ids(ListFilter()) == [nid(1), nid(2), nid(3), nid(4)]
    assert await ids(ListFilter(queue="a")) == [nid(1), nid(3), nid(4)]
    assert await ids(ListFilter(state=State.PENDING)) == [nid(1), nid(2)]
    assert await ids(ListFilter(trigger_key="t")) == [nid(3)]
    assert await ids(ListFilter(ordering_key="k1")) == [nid(1), nid(2)]
    assert await ids(ListFilter(queue="a", ordering_key="k1", state=State.PENDING)) == [nid(1)]
    assert await ids(ListFilter(queue="nope")) == []


LABEL_TRICKS = ["a'b", 'a"b', "a.b", "$.l", "%", "_", "a b", "é🙂", "1", "true", "null", "a\\b", "--", "x=y",
                "\\u0000", "\\\\u0000", "\\"]


async def test_list_filters_by_label_key_and_value_and_takes_any_text_literally(store: Store) -> None:
    def labelled(i: int, labels: dict[str, str], **kw) -> Notification:
        n = notify(i, **kw)
        return dataclasses.replace(n, spec=dataclasses.replace(n.spec, labels=labels))

    await store.insert([
        labelled(1, {"order": "42", "team": "pay"}),
        labelled(2, {"order": "43"}, queue="b"),
        labelled(3, {"team": "pay"}, state=State.FAILED),
        labelled(4, {}),
        dataclasses.replace(labelled(5, {"nul": "a\x00b", "order": "44"}), spec=dataclasses.replace(
            labelled(5, {"nul": "a\x00b", "order": "44"}).spec, request=Request("POST", "https://x/", form={"f": "\x00"}))),
        *[labelled(10 + i, {t: t}) for i, t in enumerate(LABEL_TRICKS)],
    ])  # fmt: skip

    async def ids(**f) -> list[str]:
        return [n.id for n in await store.list(ListFilter(**f), after_id="", limit=100)]

    assert await ids(label_key="order", label_value="42") == [nid(1)]
    assert await ids(label_key="order") == [nid(1), nid(2), nid(5)]
    assert await ids(label_key="order", label_value="44") == [nid(5)]  # a NUL elsewhere in the notify breaks nothing
    assert await ids(label_key="team", label_value="pay", state=State.FAILED) == [nid(3)]
    assert await ids(label_key="order", queue="b") == [nid(2)]
    assert await ids(label_key="order", label_value="4") == []
    assert await ids(label_key="order", label_value="") == []
    assert await ids(label_key="nope") == []
    for i, t in enumerate(LABEL_TRICKS):  # quotes, JSON path syntax, LIKE wildcards, JSON literals: plain text
        assert await ids(label_key=t, label_value=t) == [nid(10 + i)], t
        assert await ids(label_key=t) == [nid(10 + i)], t


async def test_list_pages_by_after_id(store: Store) -> None:
    await store.insert([notify(i) for i in (5, 1, 4, 2, 3)])
    first = await store.list(ListFilter(), after_id="", limit=2)
    second = await store.list(ListFilter(), after_id=first[-1].id, limit=2)
    third = await store.list(ListFilter(), after_id=second[-1].id, limit=2)
    assert [[n.id for n in page] for page in (first, second, third)] == [[nid(1), nid(2)], [nid(3), nid(4)], [nid(5)]]
    assert await store.list(ListFilter(), after_id=nid(5), limit=2) == []


# --- the timer's reads ---------------------------------------------------


async def test_load_due_returns_only_active_states_in_due_order_before_until(store: Store) -> None:
    await store.insert([
        notify(1, state=State.PENDING, due_ms=300),
        notify(2, state=State.SCHEDULED, due_ms=100),
        notify(3, state=State.RETRY_WAIT, due_ms=200),
        notify(4, state=State.SCHEDULED, due_ms=100),
        notify(5, state=State.SCHEDULED, due_ms=1_000),  # not before until
        notify(6, state=State.WAITING_TRIGGER, due_ms=None, trigger_key="t"),
        notify(7, state=State.SUCCEEDED, due_ms=50),
        notify(8, state=State.FAILED, due_ms=50),
        notify(9, state=State.CANCELLED, due_ms=50),
        notify(10, state=State.DELIVERING, due_ms=50),
    ])  # fmt: skip
    due = await store.load_due(after=START, until_ms=1_000, limit=100)
    assert [(n.due_ms, n.id) for n in due] == [(100, nid(2)), (100, nid(4)), (200, nid(3)), (300, nid(1))]


async def test_load_due_resumes_after_the_cursor_and_honours_limit(store: Store) -> None:
    await store.insert([notify(i, due_ms=100 * (i // 2)) for i in range(1, 8)])  # due 0,100,100,200,200,300,300
    first = await store.load_due(after=START, until_ms=10_000, limit=3)
    assert [(n.due_ms, n.id) for n in first] == [(0, nid(1)), (100, nid(2)), (100, nid(3))]
    rest = await store.load_due(after=(first[-1].due_ms, first[-1].id), until_ms=10_000, limit=3)
    assert [(n.due_ms, n.id) for n in rest] == [(200, nid(4)), (200, nid(5)), (300, nid(6))]
    mid_tie = await store.load_due(after=(100, nid(2)), until_ms=10_000, limit=1)
    assert [n.id for n in mid_tie] == [nid(3)]


async def test_load_due_sees_writes_issued_before_it(store: Store) -> None:
    _, _, due = await asyncio.gather(
        store.insert([notify(1, state=State.SCHEDULED, due_ms=100)]),
        store.trigger("never", state=State.PENDING, due_ms=0),
        store.load_due(after=START, until_ms=1_000, limit=10),
    )
    assert [n.id for n in due] == [nid(1)]


async def test_blocked_heads_are_retry_waiting_notifies_with_an_ordering_key(store: Store) -> None:
    await store.insert([
        notify(1, state=State.RETRY_WAIT, ordering_key="k1"),
        notify(2, state=State.RETRY_WAIT),
        notify(3, state=State.PENDING, ordering_key="k1"),
        notify(4, state=State.RETRY_WAIT, ordering_key="k2"),
        notify(5, state=State.FAILED, due_ms=None, ordering_key="k3"),
    ])  # fmt: skip
    assert sorted(await store.blocked_heads()) == [("k1", nid(1)), ("k2", nid(4))]


async def test_counts_are_per_state(store: Store) -> None:
    assert by_state(await store.counts()) == {}
    await store.insert([
        notify(1), notify(2), notify(3, state=State.SCHEDULED),
        notify(4, state=State.WAITING_TRIGGER, due_ms=None, trigger_key="t"), notify(5, state=State.SUCCEEDED),
    ])  # fmt: skip
    assert by_state(await store.counts()) == {State.PENDING: 2, State.SCHEDULED: 1, State.WAITING_TRIGGER: 1, State.SUCCEEDED: 1}
    await store.insert([dataclasses.replace(notify(6), spec=dataclasses.replace(notify(6).spec, queue="mail"))])
    counts = await store.counts()
    assert counts[("mail", State.PENDING)] == 1 and counts[("default", State.PENDING)] == 2


async def test_queue_settings_persist_and_update(store: Store) -> None:
    assert await store.load_queues() == []
    await store.save_queue(QueueConfig("mail", max_concurrent=5, rate=2.5, burst=3, paused=True))
    await store.save_queue(QueueConfig("sms"))
    await store.save_queue(QueueConfig("mail", max_concurrent=7, rate=0.0, burst=0, paused=False))
    assert await store.load_queues() == [QueueConfig("mail", 7, 0.0, 0, False), QueueConfig("sms")]


async def test_a_queue_setting_written_alone_keeps_the_others(store: Store) -> None:
    await store.save_queue(QueueConfig("mail", max_concurrent=5, rate=2.5, burst=3))
    paused = await store.save_queue(QueueConfig("mail", paused=True), ["paused"])  # a scheduler that knew no limits
    assert paused == QueueConfig("mail", 5, 2.5, 3, True), "the queue as stored comes back"
    limited = await store.save_queue(QueueConfig("mail", max_concurrent=9, rate=1.0, burst=1), ["max_concurrent", "rate", "burst"])
    assert limited == QueueConfig("mail", 9, 1.0, 1, True) and await store.load_queues() == [limited], "the pause stays"
    assert await store.save_queue(QueueConfig("new", rate=4.0), ["rate"]) == QueueConfig("new", rate=4.0), "a new queue takes all"


# --- lifetime ------------------------------------------------------------


async def test_data_survives_close_and_reopen(open_store: OpenStore) -> None:
    first = await open_store()
    n = rich_notify()
    await first.insert([n, notify(2, request_id="r2")])
    await first.save_results([result(n, state=State.RETRY_WAIT, attempt_record=attempt(1), due_ms=9_000)])
    await first.close()

    second = await open_store()
    got = await second.get(n.id)
    assert (got.state, got.due_ms, got.attempts, got.spec) == (State.RETRY_WAIT, 9_000, [attempt(1)], n.spec)
    assert [x.id for x in await second.insert([notify(3, request_id="r2")])] == [nid(2)]


async def test_close_is_idempotent_and_later_calls_are_unavailable(store: Store) -> None:
    await store.close()
    await store.close()
    with pytest.raises(Unavailable):
        await store.insert([notify(1)])
    with pytest.raises(Unavailable):
        await store.load_due(after=START, until_ms=1, limit=1)


# --- PostgresStore specifics ---------------------------------------------


async def test_unreachable_postgres_is_unavailable_naming_the_host_but_not_the_password() -> None:
    store = PostgresStore("postgresql://notify:s3cret-pw@127.0.0.1:1/notify", connect_timeout=2)
    with pytest.raises(Unavailable) as caught:
        await store.open()
    assert "127.0.0.1:1" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    await store.close()


@pytest.mark.postgres
async def test_postgres_writer_reconnects_after_losing_its_connection(tmp_path: Path) -> None:
    async with backing("postgres", tmp_path) as open_store:
        await _lose_and_regain_the_writer(await open_store())


async def _lose_and_regain_the_writer(store: PostgresStore) -> None:
    await store.insert([notify(1)])
    admin = await postgres_admin()
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", store._conn.get_server_pid())
    finally:
        await admin.close()
    try:
        await store.insert([notify(2)])
    except Unavailable:
        pass  # the group that found the connection gone fails; the next one reconnects
    await store.insert([notify(3)])
    assert {n.id for n in await store.load_due(after=START, until_ms=10_000, limit=10)} >= {nid(1), nid(3)}


@pytest.mark.postgres
async def test_postgres_results_written_again_record_each_attempt_once_and_never_move_a_notify_back(tmp_path: Path) -> None:
    """A results write whose commit went unanswered is made again (a lost connection): each
    attempt is recorded once, and a write for an earlier attempt leaves a later one's state."""
    async with backing("postgres", tmp_path) as open_store:
        store = await open_store()
        await store.insert([notify(i) for i in range(1, 41)])
        first = [result(await store.get(nid(i)), state=State.RETRY_WAIT, attempt_record=attempt(1), due_ms=9_000)
                 for i in range(1, 41)]  # fmt: skip
        await store.save_results(first)
        await store.save_results(first)  # the same batch again
        second = [result(w.notify, state=State.SUCCEEDED, attempt_record=attempt(2, code=200, success=True),
                         complete_ms=7_000) for w in first[:20]]  # fmt: skip
        await store.save_results(second + first[20:] + [second[0]])  # one result twice in a batch, too
        await store.save_results(first[:20])  # late: attempt 1 again, after attempt 2
        for i in range(1, 41):
            got = await store.get(nid(i))
            if i <= 20:
                assert (got.state, got.attempt_count, got.complete_ms) == (State.SUCCEEDED, 2, 7_000)
                assert [a.number for a in got.attempts] == [1, 2] and got.attempts[1].success
            else:
                assert (got.state, got.attempt_count, got.due_ms) == (State.RETRY_WAIT, 1, 9_000)
                assert [a.number for a in got.attempts] == [1]


async def test_update_replaces_spec_state_and_due_only_in_allowed_states(store: Store) -> None:
    n = notify(1, state=State.SCHEDULED, due_ms=5_000)
    await store.insert([n])
    spec = dataclasses.replace(n.spec, trigger_key="t2", request=dataclasses.replace(n.spec.request, url="http://new/"))
    changed, cur = await store.update(n.id, allowed=(State.SCHEDULED,), spec=spec, state=State.WAITING_TRIGGER, due_ms=None)
    assert changed and cur.spec == spec and (cur.state, cur.due_ms) == (State.WAITING_TRIGGER, None)
    assert (await store.get(n.id)).spec.request.url == "http://new/"
    changed, cur = await store.update(n.id, allowed=(State.SCHEDULED,), spec=n.spec, state=State.PENDING, due_ms=1)
    assert not changed and cur.state == State.WAITING_TRIGGER
    assert await store.update(nid(99), allowed=(State.SCHEDULED,), spec=n.spec, state=State.PENDING, due_ms=1) == (False, None)


async def test_save_results_commits_follow_up_notifies_with_them(store: Store) -> None:
    n = notify(1)
    await store.insert([n])
    follow = notify(2)
    await store.save_results([ResultWrite(dataclasses.replace(n, state=State.SUCCEEDED, attempt_count=1), attempt(1), follow)])
    assert (await store.get(nid(2))).state == State.PENDING


# --- fan-out groups ------------------------------------------------------


class Callbacks:
    """A GroupCallback that records the groups it was asked about."""

    def __init__(self) -> None:
        self.seen: list[GroupStatus] = []

    def __call__(self, g: GroupStatus) -> Notification:
        self.seen.append(g)
        spec = Spec(request=Request("POST", g.callback_url, json_body="{}"), queue="callbacks")
        return Notification(id=f"cb-{g.key}-{len(self.seen)}", spec=spec, state=State.PENDING, create_ms=9_000, due_ms=9_000)


def ended(n: Notification, state: State, at: int) -> ResultWrite:
    return result(n, state=state, attempt_record=attempt(1, code=200 if state == State.SUCCEEDED else 400), complete_ms=at)


async def test_group_counts_members_by_state_and_is_done_when_every_member_ended(store: Store) -> None:
    members = [notify(i, group_key="g1") for i in range(1, 5)]
    await store.insert([*members, notify(9, group_key="g2"), notify(10)])
    g = await store.group("g1")
    assert (g.key, g.counts, g.total, g.done, g.done_ms) == ("g1", {State.PENDING: 4}, 4, False, None)
    await store.save_results([ended(members[0], State.SUCCEEDED, 3_000), ended(members[1], State.FAILED, 3_500)])
    await store.transition(nid(3), allowed=(State.PENDING,), state=State.CANCELLED, due_ms=None, complete_ms=3_100)
    assert (await store.group("g1")).counts == {State.SUCCEEDED: 1, State.FAILED: 1, State.CANCELLED: 1, State.PENDING: 1}
    assert not (await store.group("g1")).done
    await store.save_results([ended(members[3], State.SUCCEEDED, 3_200)])
    g = await store.group("g1")
    assert (g.done, g.done_ms, g.total) == (True, 3_500, 4)
    assert (await store.group("g2")).counts == {State.PENDING: 1}
    assert await store.group("nope") is None


async def test_list_filters_by_group_key(store: Store) -> None:
    await store.insert([notify(1, group_key="g"), notify(2), notify(3, group_key="g", state=State.SCHEDULED),
                        notify(4, group_key="h")])  # fmt: skip
    assert [n.id for n in await store.list(ListFilter(group_key="g"), after_id="", limit=10)] == [nid(1), nid(3)]
    assert [n.id for n in await store.list(ListFilter(group_key="g", state=State.SCHEDULED), after_id="", limit=10)] == [nid(3)]
    assert [n.spec.group_key for n in await store.list(ListFilter(), after_id="", limit=10)] == ["g", "", "g", "h"]


async def test_group_callback_is_committed_once_with_the_last_members_end(store: Store) -> None:
    make = Callbacks()
    a, b = notify(1, group_key="g"), notify(2, group_key="g")
    await store.insert([a, b], group=NewGroup("g", "https://example.com/group-done"))
    assert (await store.group("g")).callback_url == "https://example.com/group-done"
    assert await store.save_results([ended(a, State.SUCCEEDED, 3_000)], group_callback=make) == []
    (cb,) = await store.save_results([ended(b, State.FAILED, 3_300)], group_callback=make)
    assert [(g.counts, g.done_ms) for g in make.seen] == [({State.SUCCEEDED: 1, State.FAILED: 1}, 3_300)]
    assert (await store.get(cb.id)).spec.request.url == "https://example.com/group-done"
    g = await store.group("g")
    assert (g.callback_ms, g.callback_id) == (cb.create_ms, cb.id)
    # the same ends reported again (or a new member ending later) make no second callback
    assert await store.save_results([ended(b, State.FAILED, 3_300)], group_callback=make) == []
    await store.insert([notify(3, group_key="g")])
    assert await store.save_results([ended(notify(3, group_key="g"), State.SUCCEEDED, 4_000)], group_callback=make) == []
    assert len(make.seen) == 1


async def test_a_group_without_a_callback_url_makes_none(store: Store) -> None:
    make = Callbacks()
    n = notify(1, group_key="quiet")
    await store.insert([n], group=NewGroup("quiet"))
    assert await store.save_results([ended(n, State.SUCCEEDED, 3_000)], group_callback=make) == []
    assert make.seen == [] and (await store.group("quiet")).done


async def test_a_group_keeps_its_first_callback_url_and_refuses_another_committing_nothing(store: Store) -> None:
    await store.insert([notify(1, group_key="g")], group=NewGroup("g", "https://example.com/first"))
    await store.insert([notify(2, group_key="g")], group=NewGroup("g", "https://example.com/first"))
    with pytest.raises(FailedPrecondition, match="first"):
        await store.insert([notify(3, group_key="g")], group=NewGroup("g", "https://example.com/second"))
    assert await store.get(nid(3)) is None
    assert (await store.group("g")).callback_url == "https://example.com/first"


async def test_cancelling_the_last_unfinished_member_makes_the_group_callback(store: Store) -> None:
    make = Callbacks()
    a, b = notify(1, group_key="g"), notify(2, group_key="g", state=State.SCHEDULED, due_ms=99_000)
    await store.insert([a, b], group=NewGroup("g", "https://example.com/done"))
    await store.save_results([ended(a, State.SUCCEEDED, 3_000)], group_callback=make)
    changed, cur, made = await store.transition(
        b.id, allowed=(State.SCHEDULED,), state=State.CANCELLED, due_ms=None, complete_ms=3_700, group_callback=make
    )
    assert changed and cur.state == State.CANCELLED and [n.id for n in made] == ["cb-g-1"]
    assert make.seen[0].counts == {State.SUCCEEDED: 1, State.CANCELLED: 1}


async def test_cancel_group_cancels_only_unfinished_members_and_makes_the_callback(store: Store) -> None:
    make = Callbacks()
    await store.insert([
        notify(1, group_key="g", state=State.SUCCEEDED, due_ms=None),
        notify(2, group_key="g", state=State.SCHEDULED, due_ms=50_000, ordering_key="k"),
        notify(3, group_key="g", state=State.WAITING_TRIGGER, due_ms=None, trigger_key="t"),
        notify(4, group_key="g", state=State.RETRY_WAIT),
        notify(5, group_key="other", state=State.SCHEDULED),
    ], group=NewGroup("g", "https://example.com/done"))  # fmt: skip
    cancelled, made = await store.cancel_group("g", complete_ms=4_000, group_callback=make)
    assert cancelled == [(nid(2), "k"), (nid(3), ""), (nid(4), "")]
    assert len(made) == 1 and make.seen[0].counts == {State.SUCCEEDED: 1, State.CANCELLED: 3}
    g = await store.group("g")
    assert (g.counts, g.done, g.done_ms) == ({State.SUCCEEDED: 1, State.CANCELLED: 3}, True, 4_000)
    assert (await store.get(nid(2))).due_ms is None
    assert (await store.get(nid(5))).state == State.SCHEDULED
    assert await store.cancel_group("g", complete_ms=5_000, group_callback=make) == ([], [])
    assert await store.cancel_group("nope", complete_ms=5_000, group_callback=make) == ([], [])


async def test_members_ending_in_concurrent_commits_make_exactly_one_callback(open_store: OpenStore, request) -> None:
    """Two writers each end one of a group's last two members at the same time, many times
    over. PostgreSQL: two stores on one database, so two transactions really overlap."""
    first = await open_store()
    second = await open_store() if "postgres" in request.node.name else first
    make = Callbacks()
    rounds = 30
    pairs = [(notify(2 * r, group_key=f"g{r}"), notify(2 * r + 1, group_key=f"g{r}")) for r in range(rounds)]
    for r, (a, b) in enumerate(pairs):
        await first.insert([a, b], group=NewGroup(f"g{r}", "https://example.com/done"))
    made = await asyncio.gather(*(
        store.save_results([ended(n, State.SUCCEEDED, 3_000)], group_callback=make)
        for a, b in pairs for store, n in ((first, a), (second, b))
    ))  # fmt: skip
    assert sorted(n.spec.request.url for batch in made for n in batch) == ["https://example.com/done"] * rounds
    assert sorted(g.key for g in make.seen) == sorted(f"g{r}" for r in range(rounds))
    assert [(await first.group(f"g{r}")).callback_ms for r in range(rounds)] == [9_000] * rounds


async def test_a_store_from_before_groups_gains_the_group_key_column(kind_and_old_store) -> None:
    store = await kind_and_old_store()
    old = await store.get(nid(1))
    assert (old.state, old.spec.group_key, old.spec.request.url) == (State.PENDING, "", "https://example.com/old")
    await store.insert([notify(2, group_key="g")])
    assert [n.id for n in await store.list(ListFilter(group_key="g"), after_id="", limit=10)] == [nid(2)]
    assert (await store.group("g")).counts == {State.PENDING: 1}


_OLD_NOTIFIES = """CREATE TABLE notifies (
    id TEXT PRIMARY KEY, request_id TEXT NOT NULL, state INTEGER NOT NULL, queue TEXT NOT NULL,
    ordering_key TEXT NOT NULL, trigger_key TEXT NOT NULL, due_ms BIGINT, create_ms BIGINT NOT NULL,
    complete_ms BIGINT, attempt_count INTEGER NOT NULL, budget_base INTEGER NOT NULL, first_attempt_ms BIGINT,
    spec TEXT NOT NULL)"""
_OLD_ROW = (nid(1), "", 3, "default", "", "", 1_000, 500, None, 0, 0, None,
            '{"m":"POST","u":"https://example.com/old","h":{},"b":"","j":"","f":{},"at":null,'
            '"r":[20,5.0,7200.0,2.0,86400.0,[]],"s":[[],""],"ff":false,"t":30.0,"x":null,"cb":"","l":{}}')  # fmt: skip


@pytest.fixture(params=ON_DISK)
async def kind_and_old_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens a store over tables written by a release before groups (one row in them)."""
    async with backing(request.param, tmp_path) as open_one:
        if request.param == "sqlite":
            import sqlite3

            with contextlib.closing(sqlite3.connect(tmp_path / "notify.db")) as conn:
                conn.execute(_OLD_NOTIFIES + " WITHOUT ROWID")
                conn.execute(f"INSERT INTO notifies VALUES ({', '.join('?' * len(_OLD_ROW))})", _OLD_ROW)
                conn.commit()
        else:
            probe = await open_one()  # learns the schema name, then starts it over with the old table
            schema = probe._schema
            await probe.close()
            admin = await postgres_admin()
            try:
                await admin.execute(f'DROP SCHEMA "{schema}" CASCADE; CREATE SCHEMA "{schema}"')
                await admin.execute(_OLD_NOTIFIES.replace("CREATE TABLE notifies", f'CREATE TABLE "{schema}".notifies'))
                await admin.execute(f'INSERT INTO "{schema}".notifies VALUES ({", ".join(f"${i}" for i in range(1, 14))})', *_OLD_ROW)
            finally:
                await admin.close()
        yield open_one


async def test_a_group_of_ten_thousand_is_counted_correctly(store: Store, request) -> None:
    members = [notify(i, group_key="big", state=State.SCHEDULED, due_ms=10_000_000) for i in range(10_000)]
    await store.insert(members + [notify(10_000 + i, group_key="other") for i in range(100)])
    await store.save_results([ended(n, State.SUCCEEDED, 3_000 + i) for i, n in enumerate(members[:250])])
    began = time.perf_counter()
    g = await store.group("big")
    took = time.perf_counter() - began
    assert (g.counts, g.total, g.done) == ({State.SUCCEEDED: 250, State.SCHEDULED: 9_750}, 10_000, False)
    began = time.perf_counter()
    cancelled, _ = await store.cancel_group("big", complete_ms=9_000)
    cancel_took = time.perf_counter() - began
    g = await store.group("big")
    assert (len(cancelled), g.counts, g.done, g.done_ms) == (9_750, {State.SUCCEEDED: 250, State.CANCELLED: 9_750}, True, 9_000)
    print(f"\n{request.node.callspec.id}: group of 10,000 counted in {took * 1000:.1f} ms, cancelled in {cancel_took * 1000:.1f} ms")


async def test_attempt_response_headers_and_mismatch_final_round_trip(store: Store) -> None:
    n = dataclasses.replace(rich_notify(), spec=dataclasses.replace(
        rich_notify().spec, success=Success(status_codes=(200,), body_contains="ok", mismatch_final=True)))  # fmt: skip
    await store.insert([n])
    with_headers = dataclasses.replace(attempt(1), headers={"Content-Type": "text/plain", "X-Odd": "\u00e9 \\u0000 \"q\""})
    await store.save_results([result(n, state=State.RETRY_WAIT, attempt_record=with_headers, due_ms=5_000)])
    got = await store.get(n.id)
    assert got is not None and got.attempts == [with_headers] and got.spec.success.mismatch_final


def test_the_shared_empty_attempts_cannot_be_appended_to() -> None:
    n = Notification("a", rich_notify().spec, State.PENDING, 1_000)
    with pytest.raises(AttributeError):
        n.attempts.append(attempt(1))  # type: ignore[union-attr]
    assert n.attempts is NO_ATTEMPTS == ()



async def test_a_batch_of_131_results_records_each_attempt_once_with_its_own_values(store: Store) -> None:
    ns = [notify(i) for i in range(1, 132)]  # 131 = 64 + 64 + 2 + 1: every size of statement the stores split into
    await store.insert(ns)
    writes = [ResultWrite(dataclasses.replace(n, state=State.FAILED, complete_ms=9_000 + i, attempt_count=1),
                          AttemptRecord(1, 2_000 + i, 3_000 + i, f"d{i}", 500 + i % 7, f"error {i}", False, bytes([i]) * i))
              for i, n in enumerate(ns)]  # fmt: skip
    await store.save_results(writes)
    for w in writes:
        got = await store.get(w.notify.id)
        assert (got.state, got.complete_ms, list(got.attempts)) == (State.FAILED, w.notify.complete_ms, [w.attempt])

# --- results batches, fuzzed ------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
_MS = st.one_of(st.none(), st.integers(min_value=0, max_value=2**62))
_RESULT = st.tuples(
    st.sampled_from([State.PENDING, State.RETRY_WAIT, State.SUCCEEDED, State.FAILED]), _MS, _MS,
    st.integers(min_value=1, max_value=2**31 - 1), st.integers(min_value=0, max_value=2**62),  # attempt count, first attempt
    st.one_of(st.none(), st.tuples(st.integers(min_value=0, max_value=599), _TEXT, st.booleans(), st.binary(max_size=64),
                                   st.dictionaries(_TEXT, _TEXT, max_size=3))),  # the attempt, if any
)  # fmt: skip


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
def test_a_batch_of_results_is_stored_field_for_field(kind: str, tmp_path: Path) -> None:
    """save_results writes each notify's new fields and its attempt exactly as given, whatever
    the values (times up to 2**62, absent ones, any text, binary snippets), one batch at a time."""
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    try:
        open_one = loop.run_until_complete(stack.enter_async_context(backing(kind, tmp_path)))
        store = loop.run_until_complete(open_one())
        made = iter(range(1, 10**9))

        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(_RESULT, min_size=1, max_size=30))
        def batch(rows) -> None:
            ns = [notify(next(made)) for _ in rows]
            loop.run_until_complete(store.insert(ns))
            writes = []
            for n, (state, due, complete, count, first, a) in zip(ns, rows):
                after = dataclasses.replace(n, state=state, due_ms=due, complete_ms=complete, attempt_count=count,
                                            first_attempt_ms=first)  # fmt: skip
                record = None if a is None else AttemptRecord(count, first, first + 5, "d", a[0], a[1], a[2], a[3], a[4])
                writes.append(ResultWrite(after, record))
            loop.run_until_complete(store.save_results(writes))
            for w in writes:
                got = loop.run_until_complete(store.get(w.notify.id))
                want = w.notify
                assert (got.state, got.due_ms, got.complete_ms, got.attempt_count, got.first_attempt_ms) == (
                    want.state, want.due_ms, want.complete_ms, want.attempt_count, want.first_attempt_ms)
                assert list(got.attempts) == ([] if w.attempt is None else [w.attempt])

        batch()
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
