"""A Python client for a NotifyAgent scheduler, sync (`Client`) and asyncio (`AsyncClient`).

    from notifyagent.client import Client, notify
    with Client() as c:                       # NOTIFY_GRPC_ADDR, NOTIFY_TOKEN, NOTIFY_TLS_* by default
        n = c.create(notify("https://example.com/hook", json='{"a": 1}', delay=5), request_id="order-42")
        print(c.get(n.id).state)

Calls are retried (exponential backoff with jitter, a few times) only when the
scheduler answers UNAVAILABLE, and only when repeating cannot do anything twice:
reads always; creates only with a `request_id` (every one, for a batch);
trigger, cancel, retry, update and cancel_group never. Every other error is raised as
`grpc.RpcError`; `violations(e)` reads its `google.rpc.BadRequest` field violations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Mapping

import grpc
from grpc_status import rpc_status
from google.rpc import error_details_pb2
from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from .common import auth, tls
from .common.config import DEFAULT_ADDR, ConfigError
from .common.grpcutil import DEFAULT_MAX_MESSAGE_BYTES, message_options
from .v1 import admin_service_pb2 as admin_pb, admin_service_pb2_grpc as admin_grpc
from .v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc as api_grpc

__all__ = ["AsyncClient", "Client", "Connection", "notify", "violations"]

ATTEMPTS = 3  # calls made at most for a call that may be repeated


@dataclass(frozen=True, kw_only=True)
class Connection:
    """Where and how to reach the scheduler. `from_env()` reads NOTIFY_GRPC_ADDR, NOTIFY_TOKEN,
    NOTIFY_TLS_CA, NOTIFY_TLS_CERT and NOTIFY_TLS_KEY; arguments given win."""

    address: str = DEFAULT_ADDR
    token: str = ""  # sent as `authorization: Bearer TOKEN`
    tls_ca: str = ""  # PEM file: verify the server with it (turns TLS on)
    tls_cert: str = ""  # PEM files: present this client certificate, with a CA (mTLS)
    tls_key: str = ""
    timeout: float = 30.0  # seconds per call
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # NOTIFY_MAX_MESSAGE_BYTES: largest message sent or accepted

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given) -> "Connection":
        env = os.environ if environ is None else environ
        values = {
            "address": env.get("NOTIFY_GRPC_ADDR") or DEFAULT_ADDR, "token": env.get("NOTIFY_TOKEN", ""),
            "tls_ca": env.get("NOTIFY_TLS_CA", ""), "tls_cert": env.get("NOTIFY_TLS_CERT", ""),
            "tls_key": env.get("NOTIFY_TLS_KEY", ""),
        }  # fmt: skip
        raw = env.get("NOTIFY_MAX_MESSAGE_BYTES") or ""
        if raw:
            try:
                values["max_message_bytes"] = int(raw)
            except ValueError:
                raise ConfigError(f"NOTIFY_MAX_MESSAGE_BYTES must be a number of bytes, not {raw!r}") from None
        values.update({k: v for k, v in given.items() if v is not None})
        return cls(**values)

    @property
    def tls(self) -> bool:
        """TLS is on when there is a CA to verify the server with (as for the CLI and dispatchers)."""
        return bool(self.tls_ca)

    def credentials(self) -> grpc.ChannelCredentials:
        """Raises ValueError (a ConfigError) naming the setting of a file that cannot be read."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("NOTIFY_TLS_CERT and NOTIFY_TLS_KEY go together: set both or neither")
        return tls.client_credentials(self.tls_ca, self.tls_cert, self.tls_key)

    def channel(self, grpc_api):
        """A channel to the address with these settings; grpc_api is `grpc` or `grpc.aio`."""
        options = message_options(self.max_message_bytes)
        if self.tls:
            return grpc_api.secure_channel(self.address, self.credentials(), options=options)
        return grpc_api.insecure_channel(self.address, options=options)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return auth.call_metadata(self.token)


def notify(
    url: str, *, method: str = "POST", headers: Mapping[str, str] | None = None, json: str | None = None,
    body: bytes | None = None, form: Mapping[str, str] | None = None, delay: float | None = None,
    at: datetime | None = None, trigger_key: str | None = None, ordering_key: str = "", queue: str = "",
    max_attempts: int = 0, timeout: float | None = None, fire_and_forget: bool = False,
    labels: Mapping[str, str] | None = None, group_key: str = "",
) -> pb.Notify:  # fmt: skip
    """A Notify message from plain values (seconds for delay and timeout; json is sent byte-exact)."""
    n = pb.Notify(ordering_key=ordering_key, queue=queue, fire_and_forget=fire_and_forget, labels=dict(labels or {}),
                  group_key=group_key)  # fmt: skip
    n.request.method = pb.HttpMethod.Value(f"HTTP_METHOD_{method.upper()}")
    n.request.url = url
    n.request.headers.update(dict(headers or {}))
    if json is not None:
        n.request.json_body = json
    if body is not None:
        n.request.body = body
    if form is not None:
        n.request.form_body.update(dict(form))
    if delay is not None:
        n.delay.FromNanoseconds(int(delay * 1e9))
    elif at is not None:
        n.deliver_at.FromDatetime(at if at.tzinfo else at.replace(tzinfo=timezone.utc))
    elif trigger_key is not None:
        n.trigger_key = trigger_key
    if max_attempts:
        n.retry.max_attempts = max_attempts
    if timeout is not None:
        n.timeout.FromNanoseconds(int(timeout * 1e9))
    return n


def violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of an INVALID_ARGUMENT error's google.rpc.BadRequest detail."""
    status = rpc_status.from_call(error)
    out = []
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out += [(v.field, v.description) for v in bad.field_violations]
    return out


def _unavailable(e: BaseException) -> bool:
    return isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.UNAVAILABLE


def _retrying(cls, repeatable: bool):
    return cls(retry=retry_if_exception(_unavailable), reraise=True, stop=stop_after_attempt(ATTEMPTS if repeatable else 1),
               wait=wait_exponential_jitter(multiplier=0.2, max=2, jitter=0.2))  # fmt: skip


def _list_request(state: int | str = 0, queue: str = "", trigger_key: str = "", ordering_key: str = "",
                  page_size: int = 0, page_token: str = "", group_key: str = "",
                  label: str = "") -> api.ListNotifiesRequest:  # fmt: skip
    if isinstance(state, str):
        state = pb.State.Value(state if state.upper().startswith("STATE_") else f"STATE_{state.upper()}")
    return api.ListNotifiesRequest(state=state, queue=queue, trigger_key=trigger_key, ordering_key=ordering_key,
                                   page_size=page_size, page_token=page_token, group_key=group_key,
                                   label=label)  # fmt: skip


def _trigger_request(key: str, delay: float) -> api.TriggerRequest:
    req = api.TriggerRequest(trigger_key=key)
    if delay:
        req.delay.FromNanoseconds(int(delay * 1e9))
    return req


def _update_request(n: pb.Notify, paths: Iterable[str]) -> api.UpdateNotifyRequest:
    req = api.UpdateNotifyRequest(notify=n)
    req.update_mask.paths.extend(paths)
    return req


class Client:
    """Blocking client. Methods answer the response's Notify (or the response, for list,
    trigger and status) and raise grpc.RpcError on error."""

    def __init__(self, address: str | None = None, *, token: str | None = None, tls_ca: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None, timeout: float | None = None) -> None:  # fmt: skip
        self.connection = Connection.from_env(address=address, token=token, tls_ca=tls_ca, tls_cert=tls_cert,
                                              tls_key=tls_key, timeout=timeout)  # fmt: skip
        self._channel = self.connection.channel(grpc)
        self._notify = api_grpc.NotifyServiceStub(self._channel)
        self._admin = admin_grpc.AdminServiceStub(self._channel)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request, *, repeatable: bool):
        for attempt in _retrying(Retrying, repeatable):
            with attempt:
                return method(request, timeout=self.connection.timeout, metadata=self.connection.metadata())

    def create(self, n: pb.Notify, *, request_id: str = "") -> pb.Notify:
        req = api.CreateNotifyRequest(notify=n, request_id=request_id)
        return self._call(self._notify.CreateNotify, req, repeatable=bool(request_id)).notify

    def batch_create(self, items: Iterable[tuple[pb.Notify, str]]) -> list[pb.Notify]:
        """items: (notify, request_id) pairs; repeated on UNAVAILABLE only when every one has a request_id."""
        reqs = [api.CreateNotifyRequest(notify=n, request_id=rid) for n, rid in items]
        resp = self._call(self._notify.BatchCreateNotify, api.BatchCreateNotifyRequest(requests=reqs),
                          repeatable=bool(reqs) and all(r.request_id for r in reqs))  # fmt: skip
        return list(resp.notifies)

    def get(self, notify_id: str) -> pb.Notify:
        return self._call(self._notify.GetNotify, api.GetNotifyRequest(id=notify_id), repeatable=True).notify

    def list(self, **filters) -> api.ListNotifiesResponse:
        """filters: state ("FAILED" or a State value), queue, trigger_key, ordering_key, group_key, label
        ("key=value" or "key"), page_size, page_token."""
        return self._call(self._notify.ListNotifies, _list_request(**filters), repeatable=True)

    def trigger(self, trigger_key: str, *, delay: float = 0.0) -> int:
        return self._call(self._notify.Trigger, _trigger_request(trigger_key, delay), repeatable=False).triggered

    def cancel(self, notify_id: str) -> pb.Notify:
        return self._call(self._notify.CancelNotify, api.CancelNotifyRequest(id=notify_id), repeatable=False).notify

    def retry(self, notify_id: str) -> pb.Notify:
        return self._call(self._notify.RetryNotify, api.RetryNotifyRequest(id=notify_id), repeatable=False).notify

    def update(self, n: pb.Notify, paths: Iterable[str]) -> pb.Notify:
        """Changes the fields named in paths (see UpdateNotifyRequest) of the notify n.id."""
        return self._call(self._notify.UpdateNotify, _update_request(n, paths), repeatable=False).notify

    def get_group(self, group_key: str) -> pb.Group:
        return self._call(self._notify.GetGroup, api.GetGroupRequest(group_key=group_key), repeatable=True).group

    def cancel_group(self, group_key: str) -> api.CancelGroupResponse:
        return self._call(self._notify.CancelGroup, api.CancelGroupRequest(group_key=group_key), repeatable=False)

    def status(self) -> admin_pb.GetStatusResponse:
        return self._call(self._admin.GetStatus, admin_pb.GetStatusRequest(), repeatable=True)


class AsyncClient:
    """The same as Client for asyncio: `async with AsyncClient() as c: await c.create(...)`."""

    def __init__(self, address: str | None = None, *, token: str | None = None, tls_ca: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None, timeout: float | None = None) -> None:  # fmt: skip
        self.connection = Connection.from_env(address=address, token=token, tls_ca=tls_ca, tls_cert=tls_cert,
                                              tls_key=tls_key, timeout=timeout)  # fmt: skip
        self._channel = self.connection.channel(grpc.aio)
        self._notify = api_grpc.NotifyServiceStub(self._channel)
        self._admin = admin_grpc.AdminServiceStub(self._channel)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method, request, *, repeatable: bool):
        async for attempt in _retrying(AsyncRetrying, repeatable):
            with attempt:
                return await method(request, timeout=self.connection.timeout, metadata=self.connection.metadata())

    async def create(self, n: pb.Notify, *, request_id: str = "") -> pb.Notify:
        req = api.CreateNotifyRequest(notify=n, request_id=request_id)
        return (await self._call(self._notify.CreateNotify, req, repeatable=bool(request_id))).notify

    async def batch_create(self, items: Iterable[tuple[pb.Notify, str]]) -> list[pb.Notify]:
        reqs = [api.CreateNotifyRequest(notify=n, request_id=rid) for n, rid in items]
        resp = await self._call(self._notify.BatchCreateNotify, api.BatchCreateNotifyRequest(requests=reqs),
                                repeatable=bool(reqs) and all(r.request_id for r in reqs))  # fmt: skip
        return list(resp.notifies)

    async def get(self, notify_id: str) -> pb.Notify:
        return (await self._call(self._notify.GetNotify, api.GetNotifyRequest(id=notify_id), repeatable=True)).notify

    async def list(self, **filters) -> api.ListNotifiesResponse:
        return await self._call(self._notify.ListNotifies, _list_request(**filters), repeatable=True)

    async def trigger(self, trigger_key: str, *, delay: float = 0.0) -> int:
        return (await self._call(self._notify.Trigger, _trigger_request(trigger_key, delay), repeatable=False)).triggered

    async def cancel(self, notify_id: str) -> pb.Notify:
        return (await self._call(self._notify.CancelNotify, api.CancelNotifyRequest(id=notify_id), repeatable=False)).notify

    async def retry(self, notify_id: str) -> pb.Notify:
        return (await self._call(self._notify.RetryNotify, api.RetryNotifyRequest(id=notify_id), repeatable=False)).notify

    async def update(self, n: pb.Notify, paths: Iterable[str]) -> pb.Notify:
        return (await self._call(self._notify.UpdateNotify, _update_request(n, paths), repeatable=False)).notify

    async def get_group(self, group_key: str) -> pb.Group:
        return (await self._call(self._notify.GetGroup, api.GetGroupRequest(group_key=group_key), repeatable=True)).group

    async def cancel_group(self, group_key: str) -> api.CancelGroupResponse:
        return await self._call(self._notify.CancelGroup, api.CancelGroupRequest(group_key=group_key), repeatable=False)

    async def status(self) -> admin_pb.GetStatusResponse:
        return await self._call(self._admin.GetStatus, admin_pb.GetStatusRequest(), repeatable=True)
