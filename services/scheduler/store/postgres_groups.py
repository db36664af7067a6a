"""Fan-out groups on PostgreSQL: a group's counts, its callback registration, and the callback
made once in the transaction that ends its last member. Runs on PostgresStore's connections."""

from __future__ import annotations

import asyncpg

from . import codec
from ..engine.errors import FailedPrecondition
from ..engine.model import GroupStatus, NewGroup, Notification, State
from ..engine.transitions import UNFINISHED
from .port import GroupCallback

_UNFINISHED_SQL = ", ".join(str(int(s)) for s in UNFINISHED)
# The spec column is TEXT (JSON) in stores written before StoredSpec; the bytes go to spec_pb. Reads
# take whichever is set (a JSON spec as its UTF-8 bytes: codec.spec_from_column tells them apart).
INSERT_COLUMNS = codec.INSERT_COLUMNS.replace(" spec,", " spec_pb,")
SELECT = codec.COLUMNS.replace(" spec,", " COALESCE(spec_pb, convert_to(spec, 'UTF8')) AS spec,")
_INSERT = f"INSERT INTO notifies ({INSERT_COLUMNS}) VALUES ({', '.join(f'${i}' for i in range(1, codec.INSERT_COUNT + 1))})"
# `group_key <> ''` in every query lets the planner use the partial index notifies_group.
_COUNTS = "SELECT state, COUNT(*), MAX(complete_ms) FROM notifies WHERE group_key = $1 AND group_key <> '' GROUP BY state"
_CALLBACK = "SELECT callback_url, callback_ms, callback_id FROM notify_groups WHERE group_key = $1"
_UNFINISHED = f"SELECT 1 FROM notifies WHERE group_key = $1 AND group_key <> '' AND state IN ({_UNFINISHED_SQL}) LIMIT 1"
_CANCEL = (
    f"UPDATE notifies SET state = {int(State.CANCELLED)}, due_ms = NULL, complete_ms = $1"
    f" WHERE group_key = $2 AND group_key <> '' AND state IN ({_UNFINISHED_SQL}) RETURNING id, ordering_key"
)


async def register(conn: asyncpg.Connection, group: NewGroup) -> None:
    """Gives a group its callback_url, once: a different one later is refused."""
    await conn.execute("INSERT INTO notify_groups (group_key, callback_url) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                       group.key, group.callback_url)  # fmt: skip
    url = await conn.fetchval("SELECT callback_url FROM notify_groups WHERE group_key = $1", group.key)
    if url != group.callback_url:
        raise FailedPrecondition(f"group {group.key!r} already has the callback_url {url!r}; a group keeps its first")


async def status(conn: asyncpg.Connection, key: str) -> GroupStatus | None:
    counts = await conn.fetch(_COUNTS, key)
    return codec.group_status(key, counts, await conn.fetchrow(_CALLBACK, key))


async def cancel(conn: asyncpg.Connection, key: str, complete_ms: int, where: str = "", *args) -> list[tuple[str, str]]:
    """Cancels the unfinished members (those `where` also picks, with `args` from $3 on);
    returns their (id, ordering_key) by id."""
    sql = _CANCEL.replace(" RETURNING", f"{where} RETURNING")
    return sorted((r[0], r[1]) for r in await conn.fetch(sql, complete_ms, key, *args))


async def end(conn: asyncpg.Connection, keys: list[str], make: GroupCallback | None) -> list[Notification]:
    """Commits the callback of each group in keys whose last member has just ended and whose
    callback has not been made.

    Two transactions may each end one of a group's last two members (schedulers sharing the
    store): each takes the group's row lock *after* writing its member, and checks for
    unfinished members in a statement of its own, which under READ COMMITTED sees every
    transaction committed before the lock was granted. So the later of the two sees both
    members ended, and the earlier one's mark (callback_ms) keeps a callback from being made
    twice. Keys come sorted, so one operation takes group locks in one order."""
    made = []
    for key in keys if make else ():
        pending = await conn.fetchval(
            "SELECT 1 FROM notify_groups WHERE group_key = $1 AND callback_url <> '' AND callback_ms IS NULL FOR UPDATE", key
        )
        if pending is None or await conn.fetchval(_UNFINISHED, key):
            continue
        n = make(await status(conn, key))
        await conn.execute(_INSERT, *codec.to_row(n))
        await conn.execute("UPDATE notify_groups SET callback_ms = $1, callback_id = $2 WHERE group_key = $3", n.create_ms, n.id, key)
        made.append(n)
    return made
