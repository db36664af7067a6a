"""Secret headers: <redacted> in every answer and log, intact at the target, encrypted at
rest with NOTIFY_SECRET_KEY (grep the SQLite file and the PostgreSQL row), a wrong or
missing key said in one line, keys rotated newest first."""

import asyncio
import base64
import os
import sqlite3
import subprocess
import sys
import uuid

import pytest

from notifyagent.common.config import ConfigError
from notifyagent.common.sealing import REDACTED, SecretBox, SecretKeyError, redact, secret_names
from notifyagent.scheduler.engine.model import Notification, Request, Spec, State
from notifyagent.scheduler.store.postgres import PostgresStore
from notifyagent.scheduler.store.sqlite import SqliteStore
from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc, storage_pb2
from support import Proc, Trust, free_port, open_channel, wait_serving
from test_store_contract import PG_DSN, postgres_admin

SECRETS = {"Authorization": "Bearer tok-SEKRIT-4711", "Cookie": "session=COOKIE-SEKRIT", "X-Signature": "SIG-SEKRIT-99"}
PLAIN = {"X-Trace": "trace-visible-1"}


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def secret_notify(i: int = 1) -> Notification:
    spec = Spec(request=Request(method="POST", url="https://example.com/hook", headers={**SECRETS, **PLAIN}))
    return Notification(id=f"01J{i:023d}", spec=spec, state=State.PENDING, create_ms=1, due_ms=1)


def scheduler_proc(tmp_path, port, trust, name, **env):
    return Proc(["scheduler", "--grpc-addr", f"127.0.0.1:{port}", "--http-addr", "", "--store", f"sqlite:///{tmp_path}/n.db"],
                log_path=tmp_path / f"{name}.log",
                env={**trust.env(), "NOTIFY_SECRET_HEADERS": "X-Signature", "NOTIFY_LOG_LEVEL": "DEBUG", **env})  # fmt: skip


def stored_bytes(tmp_path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("n.db*"))


async def test_secrets_read_redacted_everywhere_arrive_intact_and_are_encrypted_in_the_sqlite_file(tmp_path, target):
    trust, key, port = Trust.make(tmp_path), new_key(), free_port()
    scheduler = scheduler_proc(tmp_path, port, trust, "first", NOTIFY_SECRET_KEY=key).start()
    dispatcher = Proc(["dispatcher", "--registry", f"static:127.0.0.1:{port}", "--http-addr", "", "--allow-networks", "127.0.0.0/8",
                       "--log-level", "DEBUG"], log_path=tmp_path / "dispatcher.log", env=trust.env("dispatcher")).start()  # fmt: skip
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=scheduler)
        async with open_channel(f"127.0.0.1:{port}", trust.tokens["client"]) as ch:
            stub = notify_service_pb2_grpc.NotifyServiceStub(ch)
            request = pb.HttpRequest(url=target.url("/s"), headers={**SECRETS, **PLAIN})
            created = (await stub.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(request=request)))).notify
            later = pb.Notify(request=request, trigger_key="later")
            waiting = (await stub.CreateNotify(api.CreateNotifyRequest(notify=later))).notify
            answers = [created, waiting]
            received = await target.wait_for(1, timeout=15)
            assert {k: received[0].headers[k] for k in SECRETS} == SECRETS, "the target gets the real values"
            answers.append((await stub.GetNotify(api.GetNotifyRequest(id=created.id))).notify)
            answers += (await stub.ListNotifies(api.ListNotifiesRequest())).notifies
            update = pb.Notify(id=waiting.id, request=answers[-1].request)  # sent back as read: <redacted> keeps the value
            update.request.headers["X-Trace"] = "trace-visible-2"
            answers.append((await stub.UpdateNotify(api.UpdateNotifyRequest(notify=update, update_mask={"paths": ["request"]}))).notify)
            for n in answers:
                assert {k: n.request.headers[k] for k in SECRETS} == dict.fromkeys(SECRETS, REDACTED), n
                assert n.request.headers["X-Trace"].startswith("trace-visible")
            await stub.Trigger(api.TriggerRequest(trigger_key="later"))
            received = await target.wait_for(2, timeout=15)
            assert {k: received[1].headers[k] for k in SECRETS} == SECRETS, "an update that sent <redacted> back kept them"
            assert received[1].headers["X-Trace"] == "trace-visible-2"
            third = (await stub.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(request=request, trigger_key="never")))).notify
            cancelled = (await stub.CancelNotify(api.CancelNotifyRequest(id=third.id))).notify
            assert cancelled.request.headers["Authorization"] == REDACTED
    finally:
        dispatcher.terminate()
        scheduler.terminate()
    on_disk = stored_bytes(tmp_path)
    assert b"trace-visible" in on_disk, "the grep can see what is not secret"
    for value in SECRETS.values():
        assert value.encode() not in on_disk, f"{value} is in the SQLite file"
        assert value not in scheduler.log() and value not in dispatcher.log(), f"{value} is in a log"

    # A wrong key or none: one line, exit 2, nothing delivered garbled. Rotation: the new key first.
    for env, why in [({"NOTIFY_SECRET_KEY": new_key()}, "cannot decrypt"), ({}, "NOTIFY_SECRET_KEY is not set")]:
        args = [sys.executable, "-m", "notifyagent", *scheduler_proc(tmp_path, free_port(), trust, "x").args]
        out = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, timeout=30,
                                      env={**os.environ, **trust.env(), "NOTIFY_SECRET_KEY": "", **env})  # fmt: skip
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert len(errors) == 1 and why in errors[0] and "NOTIFY_SECRET_KEY" in errors[0], out.stderr
    rotated = scheduler_proc(tmp_path, port, trust, "rotated", NOTIFY_SECRET_KEY=f"{new_key()},{key}").start()
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=rotated)
        async with open_channel(f"127.0.0.1:{port}", trust.tokens["client"]) as ch:
            got = (await notify_service_pb2_grpc.NotifyServiceStub(ch).GetNotify(api.GetNotifyRequest(id=created.id))).notify
            assert got.request.headers["Authorization"] == REDACTED and got.request.headers["X-Trace"] == "trace-visible-1"
    finally:
        rotated.terminate()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_the_store_holds_no_plaintext_secret_and_a_wrong_key_is_refused_at_open(kind, tmp_path):
    key = new_key()
    names = secret_names("X-Signature")
    admin = schema = None
    if kind == "postgres":
        admin = await postgres_admin()
        schema = f"t_{uuid.uuid4().hex[:16]}"

    def build(box):
        if kind == "sqlite":
            return SqliteStore(tmp_path / "n.db", secrets=box)
        return PostgresStore(PG_DSN, schema=schema, pool_size=1, secrets=box)

    async def raw_spec(notify_id: str) -> bytes:
        if kind == "sqlite":
            with sqlite3.connect(tmp_path / "n.db") as conn:
                return conn.execute("SELECT spec FROM notifies WHERE id=?", (notify_id,)).fetchone()[0]
        return await admin.fetchval(f'SELECT spec_pb FROM "{schema}".notifies WHERE id=$1', notify_id)

    async def raw_rows() -> bytes:
        if kind == "sqlite":
            return stored_bytes(tmp_path)
        rows = await admin.fetch(f'SELECT spec, spec_pb, labels FROM "{schema}".notifies')
        return b"\n".join(r["spec"].encode() + (r["spec_pb"] or b"") + r["labels"].encode() for r in rows)

    try:
        store = build(SecretBox(key, names))
        await store.open()
        await store.insert([secret_notify(1)])
        got = await store.get(secret_notify(1).id)
        assert got.spec.request.headers == {**SECRETS, **PLAIN}, "read back intact"
        await store.close()
        row = await raw_rows()
        assert b"trace-visible-1" in row and all(v.encode() not in row for v in SECRETS.values())
        for box, why in [(SecretBox(new_key(), names), "cannot decrypt"), (None, "is not set")]:
            with pytest.raises(SecretKeyError, match=why):
                await build(box).open()
        newest = new_key()
        rotated = build(SecretBox(f"{newest},{key}", names))
        await rotated.open()
        await rotated.insert([secret_notify(2)])
        assert (await rotated.get(secret_notify(1).id)).spec.request.headers == {**SECRETS, **PLAIN}, "older keys decrypt"
        await rotated.close()
        sealed = storage_pb2.StoredSpec.FromString(await raw_spec(secret_notify(2).id)).sealed_headers
        assert SecretBox(newest, names).open(sealed, "n") == SECRETS, "new writes use the newest key"
        with pytest.raises(SecretKeyError):
            SecretBox(key, names).open(sealed, "n")
    finally:
        if admin is not None:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await admin.close()


def test_without_a_key_the_store_file_holds_the_values_as_sent():
    """The grep above can fail: without NOTIFY_SECRET_KEY the values are stored as they came."""
    from notifyagent.scheduler.store import codec

    assert b"tok-SEKRIT-4711" in codec.spec_to_bytes(secret_notify().spec)
    sealed = codec.spec_to_bytes(secret_notify().spec, SecretBox(new_key(), secret_names("X-Signature")))
    assert all(v.encode() not in sealed for v in SECRETS.values()) and b"trace-visible-1" in sealed


def test_redaction_is_case_insensitive_and_secret_header_names_are_checked():
    names = secret_names("X-Signature, x-other")
    assert redact({"authorization": "a", "X-API-KEY": "b", "x-signature": "c", "X-Other": "d", "Accept": "e"}, names) == {
        "authorization": REDACTED, "X-API-KEY": REDACTED, "x-signature": REDACTED, "X-Other": REDACTED, "Accept": "e"}
    with pytest.raises(ConfigError, match="NOTIFY_SECRET_HEADERS"):
        secret_names("bad name")
    with pytest.raises(ConfigError, match="NOTIFY_SECRET_KEY"):
        SecretBox("too-short")


async def test_secret_headers_are_redacted_in_the_in_process_api_too(tmp_path, target):
    from support import System, settings_for

    system = System(settings_for(tmp_path, secret_headers="X-Signature"))
    await system.start()
    try:
        n = await system.create("", request=pb.HttpRequest(url=target.url("/x"), headers=SECRETS))
        assert n.request.headers["X-Signature"] == REDACTED
        await target.wait_for(1)
        assert target.received[0].headers["X-Signature"] == SECRETS["X-Signature"]
        assert (await system.get(n.id)).request.headers["Authorization"] == REDACTED
    finally:
        await system.stop()
