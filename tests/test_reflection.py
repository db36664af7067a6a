"""Server reflection serves the contract with its comments, so `grpcurl describe` explains it."""

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from support import System, settings_for


async def _files(channel, **query) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**query)]))
    out = {}
    async for resp in call:
        for raw in resp.file_descriptor_response.file_descriptor_proto:
            f = descriptor_pb2.FileDescriptorProto.FromString(raw)
            out[f.name] = f
    return out


def _comment(f: descriptor_pb2.FileDescriptorProto, path: list[int]) -> str:
    return next((loc.leading_comments for loc in f.source_code_info.location if list(loc.path) == path), "")


async def test_reflection_serves_the_comments_of_every_service_file(tmp_path):
    system = System(settings_for(tmp_path))
    await system.start()
    try:
        for service in ("NotifyService", "AdminService", "DispatchService"):
            files = await _files(system.channel, file_containing_symbol=f"notifyagent.v1.{service}")
            (own,) = [f for f in files.values() if f.service]
            assert f"{service} is" in _comment(own, [6, 0])  # service 0
            assert _comment(files["notifyagent/v1/notify.proto"], [4, 0, 2, 1])  # Notify.request... any field
        files = await _files(system.channel, file_containing_symbol="notifyagent.v1.NotifyService")
        svc = _comment(files["notifyagent/v1/notify_service.proto"], [6, 0])
        assert "INVALID_ARGUMENT" in svc and "google.rpc.BadRequest" in svc
        health = await _files(system.channel, file_by_filename="grpc_health/v1/health.proto")
        assert "grpc_health/v1/health.proto" in health  # files outside the contract are served as before
    finally:
        await system.stop()


async def test_every_message_field_enum_value_and_rpc_has_a_comment(tmp_path):
    """The contract is documented in full: grpcurl describe has something to say about each part."""
    from notifyagent.common.reflection import commented_files

    missing = []
    for name, raw in commented_files().items():
        f = descriptor_pb2.FileDescriptorProto.FromString(raw)
        documented = {tuple(loc.path) for loc in f.source_code_info.location if loc.leading_comments.strip()}

        def need(path, what):
            if tuple(path) not in documented:
                missing.append(f"{name}: {what}")

        def message(m, path, name):
            if m.options.map_entry:
                return
            need(path, name)
            for j, fld in enumerate(m.field):
                need([*path, 2, j], f"{name}.{fld.name}")
            for j, nested in enumerate(m.nested_type):
                message(nested, [*path, 3, j], f"{name}.{nested.name}")

        for i, m in enumerate(f.message_type):
            message(m, [4, i], m.name)
        for i, e in enumerate(f.enum_type):
            need([5, i], e.name)
            for j, v in enumerate(e.value):
                need([5, i, 2, j], f"{e.name}.{v.name}")
        for i, s in enumerate(f.service):
            need([6, i], s.name)
            for j, rpc in enumerate(s.method):
                need([6, i, 2, j], f"{s.name}.{rpc.name}")
    assert not missing, "undocumented: " + ", ".join(missing)
