"""Server reflection that serves the contract's comments, so `grpcurl describe` explains it.

The generated *_pb2 modules carry descriptors without comments; scripts/genproto.py
also writes notifyagent.binpb (the same files with their source info), and this
servicer hands those out in place of the bare ones."""

from __future__ import annotations

import functools
from importlib import resources

from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import _async, reflection, reflection_pb2, reflection_pb2_grpc


@functools.cache
def commented_files() -> dict[str, bytes]:
    """File name -> serialized FileDescriptorProto with comments, for proto/notifyagent/v1."""
    data = resources.files("notifyagent.v1").joinpath("notifyagent.binpb").read_bytes()
    return {f.name: f.SerializeToString() for f in descriptor_pb2.FileDescriptorSet.FromString(data).file}


class CommentedReflection(_async.ReflectionServicer):
    def _file_by_filename(self, request, filename):
        return _with_comments(super()._file_by_filename(request, filename))

    def _file_containing_symbol(self, request, fully_qualified_name):
        return _with_comments(super()._file_containing_symbol(request, fully_qualified_name))


def _with_comments(response: reflection_pb2.ServerReflectionResponse) -> reflection_pb2.ServerReflectionResponse:
    if not response.HasField("file_descriptor_response"):
        return response
    files = response.file_descriptor_response.file_descriptor_proto
    commented = commented_files()
    for i, raw in enumerate(files):
        name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
        if name in commented:
            files[i] = commented[name]
    return response


def enable(server, service_names: list[str]) -> None:
    """Adds reflection for service_names (and the reflection service itself) to an aio server."""
    names = [*service_names, reflection.SERVICE_NAME]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(CommentedReflection(names), server)
