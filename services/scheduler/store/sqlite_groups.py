"""Fan-out groups on SQLite: a group's counts, its callback registration, and the callback
made once in the transaction that ends its last member. Runs on SqliteStore's connections."""

from __future__ import annotations

import sqlite3

from . import codec
from ..engine.errors import FailedPrecondition
from ..engine.model import GroupStatus, NewGroup, Notification, State
from ..engine.transitions import UNFINISHED
from .port import GroupCallback

_UNFINISHED_SQL = ", ".join(str(int(s)) for s in UNFINISHED)
_INSERT = f"INSERT INTO notifies ({codec.INSERT_COLUMNS}) VALUES ({', '.join('?' * codec.INSERT_COUNT)})"
# `group_key != ''` in every query lets the planner use the partial index notifies_group.
_COUNTS = "SELECT state, COUNT(*), MAX(complete_ms) FROM notifies WHERE group_key = ? AND group_key != '' GROUP BY state"
_CALLBACK = "SELECT callback_url, callback_ms, callback_id FROM notify_groups WHERE group_key = ?"
_UNFINISHED = f"SELECT 1 FROM notifies WHERE group_key = ? AND group_key != '' AND state IN ({_UNFINISHED_SQL}) LIMIT 1"
_CANCEL = (
    f"UPDATE notifies SET state = {int(State.CANCELLED)}, due_ms = NULL, complete_ms = ?"
    f" WHERE group_key = ? AND group_key != '' AND state IN ({_UNFINISHED_SQL}) RETURNING id, ordering_key"
)


def register(conn: sqlite3.Connection, group: NewGroup) -> None:
    """Gives a group its callback_url, once: a different one later is refused."""
    conn.execute("INSERT INTO notify_groups (group_key, callback_url) VALUES (?, ?) ON CONFLICT DO NOTHING",
                 (group.key, group.callback_url))  # fmt: skip
    (url,) = conn.execute("SELECT callback_url FROM notify_groups WHERE group_key = ?", (group.key,)).fetchone()
    if url != group.callback_url:
        raise FailedPrecondition(f"group {group.key!r} already has the callback_url {url!r}; a group keeps its first")


def status(conn: sqlite3.Connection, key: str) -> GroupStatus | None:
    counts = conn.execute(_COUNTS, (key,)).fetchall()
    return codec.group_status(key, counts, conn.execute(_CALLBACK, (key,)).fetchone())


def cancel(conn: sqlite3.Connection, key: str, complete_ms: int, where: str = "") -> list[tuple[str, str]]:
    """Cancels the unfinished members (those `where` also picks); returns their (id, ordering_key) by id."""
    sql = _CANCEL.replace(" RETURNING", f"{where} RETURNING")
    return sorted((r[0], r[1]) for r in conn.execute(sql, (complete_ms, key)).fetchall())


def end(conn: sqlite3.Connection, keys: list[str], make: GroupCallback | None) -> list[Notification]:
    """Commits the callback of each group in keys whose last member has just ended and whose
    callback has not been made. The writer runs one transaction at a time (BEGIN IMMEDIATE
    also keeps out other processes), so the check and the mark cannot interleave."""
    made = []
    for key in keys if make else ():
        pending = conn.execute(
            "SELECT 1 FROM notify_groups WHERE group_key = ? AND callback_url != '' AND callback_ms IS NULL", (key,)
        ).fetchone()
        if pending is None or conn.execute(_UNFINISHED, (key,)).fetchone():
            continue
        n = make(status(conn, key))
        conn.execute(_INSERT, codec.to_row(n))
        conn.execute("UPDATE notify_groups SET callback_ms = ?, callback_id = ? WHERE group_key = ?", (n.create_ms, n.id, key))
        made.append(n)
    return made
