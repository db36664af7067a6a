"""What a notify held in memory (due within the horizon) shares with others instead of copying:
one Request per plain call, one policy object per distinct policy, one empty mapping. Pinned for the
API's conversion and for notifies the loader reads from SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from notifyagent.scheduler.api import convert
from notifyagent.scheduler.engine.model import EMPTY, Notification, Request, RetryPolicy, Spec, State, Success
from notifyagent.v1 import notify_pb2 as pb

from test_store_contract import START, backing, nid


def held(i: int, *, url: str = "https://example.com/hook", headers: dict | None = None) -> Notification:
    spec = Spec(
        request=Request("POST", url, headers=dict(headers or {}), json_body='{"a":1}'), deliver_at_ms=1_000,
        retry=RetryPolicy(max_attempts=3), success=Success(status_codes=(200,)),
    )  # fmt: skip
    return Notification(id=nid(i), spec=spec, state=State.SCHEDULED, create_ms=500, due_ms=1_000)


def test_created_notifies_with_the_same_call_share_one_request_and_policies():
    p = pb.Notify(request=pb.HttpRequest(method=pb.HTTP_METHOD_POST, url="https://example.com/a", json_body="{}"))
    p.retry.max_attempts = 3
    a = convert.new_notify(p, "", now_ms=0)
    b = convert.new_notify(pb.Notify.FromString(p.SerializeToString()), "", now_ms=0)
    assert a.spec.request is b.spec.request and a.spec.retry is b.spec.retry
    assert a.spec.labels is EMPTY and a.spec.request.headers is EMPTY
    p.request.headers["X-One"] = "1"
    c = convert.new_notify(p, "", now_ms=0)
    assert c.spec.request is not a.spec.request and c.spec.request.headers == {"X-One": "1"}


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_loaded_notifies_with_the_same_call_share_one_request_and_policies(kind: str, tmp_path: Path):
    async with backing(kind, tmp_path) as open_one:
        store = await open_one()
        await store.insert([held(1), held(2), held(3, headers={"X-A": "1"}), held(4, url="https://example.com/other")])
        loaded = {n.id: n for n in await store.load_due(after=START, until_ms=10_000, limit=10)}
        one, two, with_headers, other = (loaded[nid(i)].spec for i in (1, 2, 3, 4))
        assert one.request is two.request and one.retry is two.retry and one.success is two.success
        assert one.labels is EMPTY and one.request.headers is EMPTY and one.request.form is EMPTY
        assert with_headers.request is not one.request and with_headers.request.headers == {"X-A": "1"}
        assert other.request is not one.request and other.request.url == "https://example.com/other"
        assert one == held(1).spec  # sharing changes nothing a reader sees
