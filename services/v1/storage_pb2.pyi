from notifyagent.v1 import notify_pb2 as _notify_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StoredSpec(_message.Message):
    __slots__ = ("sealed_headers", "spec")
    SEALED_HEADERS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    sealed_headers: str
    spec: _notify_pb2.Notify
    def __init__(self, sealed_headers: _Optional[str] = ..., spec: _Optional[_Union[_notify_pb2.Notify, _Mapping]] = ...) -> None: ...
