"""The HTTP/JSON API: the same operations as gRPC, for callers without gRPC.

One route table maps each HTTP route to a servicer method; every request goes
through `HttpApi.handle` (the one hook for authentication), is parsed as proto3
JSON into the RPC's request message, and is answered by the very servicer
object gRPC uses, through a small context adapter, so validation and errors
are the same. Errors are Google-style:

    {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "...",
               "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", ...}]}}
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

import grpc
from aiohttp import hdrs, web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from ...v1 import admin_service_pb2 as admin_pb, notify_service_pb2 as api
from .routing import FORWARDED

log = logging.getLogger(__name__)

# google.rpc.Code -> HTTP, as in google/rpc/code.proto (FAILED_PRECONDITION is 400 there).
HTTP_STATUS = {
    code_pb2.OK: 200, code_pb2.CANCELLED: 499, code_pb2.UNKNOWN: 500, code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504, code_pb2.NOT_FOUND: 404, code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403, code_pb2.UNAUTHENTICATED: 401, code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400, code_pb2.ABORTED: 409, code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501, code_pb2.INTERNAL: 500, code_pb2.UNAVAILABLE: 503, code_pb2.DATA_LOSS: 500,
}  # fmt: skip
MIN_BODY_LIMIT = 8 << 20  # bytes of JSON one HTTP request may carry (at least; see body_limit)
MAX_QUERY_PARAMS = 16
_ID = r"(?P<id>[^/:]{1,256})"
_QUEUE = r"(?P<name>[A-Za-z0-9._:/@+\-=]{1,200}?)"  # a queue name may hold : and /; the route's end anchors it
_KEY = r"(?P<group_key>[^/]{1,1024}?)"  # a group key may hold ':'; the shortest match leaves ':cancel' to the route
_PROTO_LIKE = re.compile(r"(?<!^)(?=[A-Z])")
_UNKNOWN = re.compile(r'no field named "(\w+)" at "\w+\.?([\w.]*)"')
_CHAIN = re.compile(r"Failed to parse (\w+) field")
_WHERE = re.compile(r' at "?\w+\.([\w.\[\]]+?)"?\.?$')


@dataclass(frozen=True)
class Route:
    """One HTTP route: method + path pattern -> (service, rpc); where the request message comes from."""

    method: str
    pattern: re.Pattern
    service: str  # "notify" or "admin"
    rpc: str
    request: type[Message]
    body: str | None  # None: no body; "*": the whole request; else the request field the body fills

    @property
    def full_name(self) -> str:
        """The gRPC method this route is, e.g. /notifyagent.v1.NotifyService/CreateNotify (for auth)."""
        svc = "NotifyService" if self.service == "notify" else "AdminService"
        return f"/notifyagent.v1.{svc}/{self.rpc}"


def _route(method: str, path: str, service: str, rpc: str, request: type[Message], body: str | None) -> Route:
    return Route(method, re.compile(f"^{path}$"), service, rpc, request, body)


# The one mapping, declared once (DESIGN.md "HTTP/JSON API").
ROUTES: tuple[Route, ...] = (
    _route(hdrs.METH_POST, "/v1/notifies", "notify", "CreateNotify", api.CreateNotifyRequest, "*"),
    _route(hdrs.METH_POST, "/v1/notifies:batchCreate", "notify", "BatchCreateNotify", api.BatchCreateNotifyRequest, "*"),
    _route(hdrs.METH_GET, f"/v1/notifies/{_ID}", "notify", "GetNotify", api.GetNotifyRequest, None),
    _route(hdrs.METH_GET, "/v1/notifies", "notify", "ListNotifies", api.ListNotifiesRequest, None),
    _route(hdrs.METH_POST, f"/v1/notifies/{_ID}:cancel", "notify", "CancelNotify", api.CancelNotifyRequest, "*"),
    _route(hdrs.METH_POST, f"/v1/notifies/{_ID}:retry", "notify", "RetryNotify", api.RetryNotifyRequest, "*"),
    _route(hdrs.METH_PATCH, f"/v1/notifies/{_ID}", "notify", "UpdateNotify", api.UpdateNotifyRequest, "notify"),
    _route(hdrs.METH_POST, "/v1/notifies:trigger", "notify", "Trigger", api.TriggerRequest, "*"),
    _route(hdrs.METH_GET, f"/v1/groups/{_KEY}", "notify", "GetGroup", api.GetGroupRequest, None),
    _route(hdrs.METH_POST, f"/v1/groups/{_KEY}:cancel", "notify", "CancelGroup", api.CancelGroupRequest, "*"),
    _route(hdrs.METH_GET, "/v1/status", "admin", "GetStatus", admin_pb.GetStatusRequest, None),
    _route(hdrs.METH_POST, f"/v1/queues/{_QUEUE}:pause", "admin", "PauseQueue", admin_pb.PauseQueueRequest, "*"),
    _route(hdrs.METH_POST, f"/v1/queues/{_QUEUE}:resume", "admin", "ResumeQueue", admin_pb.ResumeQueueRequest, "*"),
)


class ApiError(Exception):
    """A call ends with this google.rpc.Status (raised by the context adapter, the parser or the auth hook)."""

    def __init__(self, status: status_pb2.Status, *, http_status: int | None = None) -> None:
        super().__init__(status.message)
        self.status = status
        self.http_status = http_status  # when HTTP has a better word than the code's mapping (405, 413)

    @classmethod
    def of(cls, code: int, message: str, violations: Sequence[tuple[str, str]] = (), *,
           http_status: int | None = None) -> "ApiError":  # fmt: skip
        status = status_pb2.Status(code=code, message=message)
        if violations:
            bad = error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations])  # fmt: skip
            status.details.add().Pack(bad)
        return cls(status, http_status=http_status)


# The auth hook: given the gRPC method name and the request's metadata (lower-case
# header names), returns normally or raises ApiError (UNAUTHENTICATED, PERMISSION_DENIED).
Authorize = Callable[[str, Sequence[tuple[str, str]]], Awaitable[None]]


class _Context:
    """What the servicers (and the router that forwards their calls) use of
    grpc.aio.ServicerContext, for a call that came over HTTP."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._trailing: tuple = ()

    async def abort_with_status(self, status: grpc.Status) -> None:
        self._trailing = tuple(status.trailing_metadata or ())
        await self.abort(status.code, status.details or "")

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        for key, value in (*self._trailing, *(trailing_metadata or ())):
            if key == "grpc-status-details-bin":  # the full status, details included
                raise ApiError(status_pb2.Status.FromString(value))
        raise ApiError(status_pb2.Status(code=code.value[0], message=details))

    def set_trailing_metadata(self, metadata) -> None:
        self._trailing = tuple(metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return _metadata(self._request)

    def time_remaining(self) -> float | None:
        return None  # HTTP carries no deadline: a forwarded call gets the router's default

    def peer(self) -> str:
        return f"http:{self._request.remote}"


def _metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The headers as gRPC metadata; never the schedulers' own forwarding mark (an HTTP call is
    never a forwarded one)."""
    return tuple((k.lower(), v) for k, v in request.headers.items() if k.lower() != FORWARDED)


def body_limit(max_body_bytes: int) -> int:
    """Bytes an HTTP request body may have: room for a notify body at its limit as base64, with margin."""
    return max(MIN_BODY_LIMIT, 2 * max_body_bytes + (1 << 20))


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def error_body(status: status_pb2.Status) -> dict[str, Any]:
    return {"error": {
        "code": HTTP_STATUS.get(status.code, 500),
        "status": code_pb2.Code.Name(status.code) if status.code in code_pb2.Code.values() else "UNKNOWN",
        "message": status.message,
        "details": [json_format.MessageToDict(d, preserving_proto_field_name=True) for d in status.details],
    }}  # fmt: skip


def error_response(status: status_pb2.Status, *, http_status: int | None = None) -> web.Response:
    body = error_body(status)
    if http_status is not None:
        body["error"]["code"] = http_status
    return web.json_response(body, status=body["error"]["code"])


class HttpApi:
    """Serves ROUTES with the given servicers. `install(app)` adds them to an aiohttp app."""

    def __init__(self, *, notify, admin, authorize: Authorize | None = None, max_body_bytes: int = 1 << 20) -> None:
        self._servicers = {"notify": notify, "admin": admin}
        self._authorize = authorize
        self.body_limit = body_limit(max_body_bytes)

    def install(self, app: web.Application) -> None:
        app.router.add_route("*", "/v1/{tail:.*}", self.handle)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed = False
        for route in ROUTES:
            m = route.pattern.match(path)
            if m is None:
                continue
            if route.method == method:
                return route, m.groupdict()
            allowed = True
        if allowed:
            raise ApiError.of(code_pb2.UNIMPLEMENTED, f"{method} is not a method of {path}", http_status=405)
        raise ApiError.of(code_pb2.NOT_FOUND, f"no route {method} {path}; see DESIGN.md 'HTTP/JSON API'")

    async def handle(self, request: web.Request) -> web.Response:
        """Every API call comes through here: route, authorize, parse, call the servicer, answer."""
        try:
            route, params = self.match(request.method, request.path)
            if self._authorize is not None:
                await self._authorize(route.full_name, _metadata(request))
            message = await self._parse(route, params, request)
            handler = getattr(self._servicers[route.service], route.rpc)
            response = await handler(message, _Context(request))
        except ApiError as e:
            return error_response(e.status, http_status=e.http_status)
        except web.HTTPRequestEntityTooLarge:
            return error_response(ApiError.of(code_pb2.INVALID_ARGUMENT, f"request body over {self.body_limit} bytes",
                                              [("body", f"must be at most {self.body_limit} bytes")]).status,
                                  http_status=413)  # fmt: skip
        except Exception:  # a bug: logged here, answered as INTERNAL, never a stack trace to the caller
            log.exception("HTTP %s %s failed", request.method, request.path)
            return error_response(status_pb2.Status(code=code_pb2.INTERNAL, message="internal error"))
        return web.json_response(to_json(response))

    async def _parse(self, route: Route, params: dict[str, str], request: web.Request) -> Message:
        message = route.request()
        if route.body is not None:
            raw = await request.read()
            if raw.strip():
                target = message if route.body == "*" else getattr(message, route.body)
                _parse_json(raw, target, prefix="" if route.body == "*" else f"{route.body}.")
        if len(request.query) > MAX_QUERY_PARAMS:
            raise ApiError.of(code_pb2.INVALID_ARGUMENT, "too many query parameters",
                              [("query", f"at most {MAX_QUERY_PARAMS} parameters")])  # fmt: skip
        query = dict(request.query)
        if route.rpc == "UpdateNotify":
            message.notify.id = params.pop("id")
            mask = query.pop("update_mask", query.pop("updateMask", ""))
            message.update_mask.paths.extend(_snake(p.strip()) for p in mask.split(",") if p.strip())
        if query:
            _parse_query(query, message)
        for name, value in params.items():
            setattr(message, name, value)
        return message


def _parse_json(raw: bytes, target: Message, *, prefix: str = "") -> None:
    try:
        doc = json.loads(raw)
        json_format.ParseDict(doc, target)
    except RecursionError:
        raise ApiError.of(code_pb2.INVALID_ARGUMENT, "request body nests too deeply",
                          [("body", "JSON nested too deeply")]) from None  # fmt: skip
    except (ValueError, json_format.ParseError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        text = str(e).splitlines()[0][:500] if str(e) else type(e).__name__
        field = _field_of(text)
        field = prefix + field if field else "body"
        raise ApiError.of(code_pb2.INVALID_ARGUMENT, f"request body is not a valid {target.DESCRIPTOR.name} in proto3 JSON: {text}",
                          [(field, text)]) from None  # fmt: skip


def _field_of(text: str) -> str:
    """The field path a json_format error names, from its wording ("" when it names none)."""
    unknown = _UNKNOWN.search(text)  # no field named "colour" at "CreateNotifyRequest.notify"
    if unknown:
        return ".".join(p for p in (unknown.group(2), unknown.group(1)) if p)
    chain = _CHAIN.findall(text)  # Failed to parse notify field: Failed to parse request field: ...
    if chain:
        return ".".join(chain)
    where = _WHERE.search(text)  # ... at "CreateNotifyRequest.notify.delay".
    return where.group(1) if where else ""


def _parse_query(query: dict[str, str], message: Message) -> None:
    doc: dict[str, Any] = {}
    for key, value in query.items():
        field = message.DESCRIPTOR.fields_by_name.get(_snake(key))
        if field is None or field.message_type is not None:
            raise ApiError.of(code_pb2.INVALID_ARGUMENT, f"unknown query parameter {key!r}",
                              [(key, f"is not a field of {message.DESCRIPTOR.name}")])  # fmt: skip
        if field.enum_type is not None and not value.isdigit():
            prefix = _snake(field.enum_type.name).upper() + "_"
            value = value.upper() if value.upper().startswith(prefix) else prefix + value.upper()
        doc[field.name] = value
    try:
        json_format.ParseDict(doc, message)
    except json_format.ParseError as e:
        raise ApiError.of(code_pb2.INVALID_ARGUMENT, f"bad query parameter: {e}", [("query", str(e)[:500])]) from None


def _snake(name: str) -> str:
    return _PROTO_LIKE.sub("_", name).lower()
