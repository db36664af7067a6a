"""gRPC server plumbing shared by the services: health, reflection, port 0."""

from __future__ import annotations

import socket

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import reflection as commented_reflection

from .config import StartupError


def create_server(addr: str, registrations, service_names: list[str]) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Builds a server with health and reflection on addr; returns (server, bound port, health).

    registrations: callables taking the server (the generated add_*_to_server with a servicer bound).
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.so_reuseport", 0),
        ]
    )
    for register in registrations:
        register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    commented_reflection.enable(server, [*service_names, health.SERVICE_NAME])
    _check_free(addr)
    try:
        port = server.add_insecure_port(addr)
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
