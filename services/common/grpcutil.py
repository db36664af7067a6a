"""gRPC server plumbing shared by the services: health, reflection, port 0."""

from __future__ import annotations

import inspect
import socket

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from . import reflection as commented_reflection

from .config import StartupError

DEFAULT_MAX_MESSAGE_BYTES = 16 << 20


def message_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """The same message limits for servers and channels: what one end sends, the other accepts."""
    return [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)]


def runs_within(items: list, budget: int, cost) -> list[list]:
    """items in order, in runs whose cost(item)s add up to at most budget (one item alone may
    exceed it): what one stream message may carry under NOTIFY_MAX_MESSAGE_BYTES. At least one
    run, empty when there are no items."""
    runs: list[list] = [[]]
    size = 0
    for item in items:
        n = cost(item)
        if runs[-1] and size + n > budget:
            runs.append([])
            size = 0
        runs[-1].append(item)
        size += n
    return runs


def create_server(
    addr: str, registrations, service_names: list[str], *, interceptors=(), credentials: grpc.ServerCredentials | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Builds a server with health and reflection on addr; returns (server, bound port, health).

    registrations: callables taking the server (the generated add_*_to_server with a servicer bound).
    interceptors: e.g. auth.AuthInterceptor; credentials: TLS (tls.ServerTls), None for plaintext.
    Their unary methods decode requests themselves (see StrictDecoding).
    """
    server = grpc.aio.server(interceptors=list(interceptors), options=[*message_options(max_message_bytes), ("grpc.so_reuseport", 0)])
    strict = StrictDecoding(server)
    for register in registrations:
        register(strict)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, strict)
    commented_reflection.enable(server, [*service_names, health.SERVICE_NAME])
    _check_free(addr)
    try:
        port = server.add_secure_port(addr, credentials) if credentials is not None else server.add_insecure_port(addr)
    except RuntimeError:  # grpc says only "Failed to bind"; without SO_REUSEPORT that is in use or not ours
        port = 0
    if port == 0:
        raise StartupError(f"cannot listen on {addr}: address in use or not valid; set NOTIFY_GRPC_ADDR to a free address")
    return server, port, health_servicer


def _check_free(addr: str) -> None:
    """Raises StartupError when addr is taken, before grpc tries (which would log its own error line)."""
    host, _, port = addr.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        raise StartupError(f"cannot listen on {addr}: {e.strerror or e}; set NOTIFY_GRPC_ADDR to a host:port of this machine") from e
    for family, kind, proto, _, sockaddr in infos[:1]:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc does: TIME_WAIT is no conflict
            try:
                s.bind(sockaddr)
            except OSError as e:
                raise StartupError(f"cannot listen on {addr}: {e.strerror or e}; set NOTIFY_GRPC_ADDR to a free address") from e


async def set_serving(health_servicer, service_names: list[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await health_servicer.set(name, status)


class StrictDecoding:
    """Stands in for the server while the generated add_*_to_server registers a service.

    grpcio answers a request it cannot deserialize with INTERNAL ("Exception
    deserializing request!"). Bad bytes are the caller's fault: for every
    request this takes the raw bytes and decodes them in the handler, so
    malformed protobuf or invalid UTF-8 in a string field is INVALID_ARGUMENT
    with a field violation. A stream's requests (the dispatchers' Lease stream)
    are decoded as the handler reads them: a malformed one ends the call with
    INVALID_ARGUMENT too (grpcio would raise its DecodeError into the handler,
    which answers UNKNOWN)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._server.add_generic_rpc_handlers(tuple(_StrictGeneric(h) for h in handlers))

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict) -> None:
        self._server.add_registered_method_handlers(service_name, {m: strict(h) for m, h in method_handlers.items()})


class _StrictGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner
        self._cache: dict[str, grpc.RpcMethodHandler] = {}  # only methods that exist: callers pick the names

    def service(self, handler_call_details):
        method = handler_call_details.method
        handler = self._cache.get(method)
        if handler is None:
            found = self._inner.service(handler_call_details)
            if found is None:
                return None
            handler = self._cache[method] = strict(found)
        return handler


def strict(handler):
    """The handler with its requests decoded inside it (INVALID_ARGUMENT when that fails): a unary
    request before the behaviour runs, a stream's requests one by one as the behaviour reads them
    (the call ends there with the status; what came before was handled)."""
    decode = handler.request_deserializer
    if decode is None:
        return handler

    async def one(raw: bytes, context):
        try:
            return decode(raw)
        except Exception as e:  # noqa: BLE001 - DecodeError, or anything a broken message raises
            await context.abort_with_status(rpc_status.to_status(_malformed(e)))

    async def each(raws, context):
        async for raw in raws:
            try:
                request = decode(raw)
            except Exception as e:  # noqa: BLE001 - as above
                await context.abort_with_status(rpc_status.to_status(_malformed(e)))
            yield request

    if handler.request_streaming:
        kind = "stream_stream" if handler.stream_stream is not None else "stream_unary"
    else:
        kind = "unary_unary" if handler.unary_unary is not None else "unary_stream"
    behaviour = getattr(handler, kind)

    if kind == "unary_unary" and inspect.iscoroutinefunction(behaviour):  # every unary RPC here: one coroutine per call

        async def unary(raw: bytes, context):
            try:
                request = decode(raw)
            except Exception as e:  # noqa: BLE001 - as above
                await context.abort_with_status(rpc_status.to_status(_malformed(e)))
            return await behaviour(request, context)

        return handler._replace(request_deserializer=None, unary_unary=unary)

    async def requests(raw, context):
        return each(raw, context) if handler.request_streaming else await one(raw, context)

    if inspect.isasyncgenfunction(behaviour):

        async def wrapped(raw, context):
            async for item in behaviour(await requests(raw, context), context):
                yield item

    else:  # returns its answer, or writes with context.write

        async def wrapped(raw, context):
            result = behaviour(await requests(raw, context), context)
            return await result if inspect.isawaitable(result) else result

    return handler._replace(request_deserializer=None, **{kind: wrapped})


def _malformed(e: Exception) -> status_pb2.Status:
    description = f"cannot be decoded as this method's request message: {str(e)[:200]}"
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="request", description=description)
    ]))  # fmt: skip
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=f"request {description}", details=[detail])
