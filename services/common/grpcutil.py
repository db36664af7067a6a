"""gRPC server plumbing shared by the services: health, reflection, port 0."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import reflection as commented_reflection


def create_server(
    addr: str, registrations, service_names: list[str], *, interceptors=(), credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Builds a server with health and reflection on addr; returns (server, bound port, health).

    registrations: callables taking the server (the generated add_*_to_server with a servicer bound).
    interceptors: e.g. auth.AuthInterceptor; credentials: TLS (tls.ServerTls), None for plaintext.
    """
    server = grpc.aio.server(
        interceptors=list(interceptors),
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
    port = server.add_secure_port(addr, credentials) if credentials is not None else server.add_insecure_port(addr)
    if port == 0:
        raise OSError(f"cannot listen on {addr}: address in use or not valid (set NOTIFY_GRPC_ADDR)")
    return server, port, health_servicer


async def set_serving(health_servicer, service_names: list[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await health_servicer.set(name, status)
