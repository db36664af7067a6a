import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from notifyagent.v1 import notify_pb2 as _notify_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DispatcherHello(_message.Message):
    __slots__ = ("dispatcher_id", "version", "capacity", "credit")
    DISPATCHER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    dispatcher_id: str
    version: str
    capacity: int
    credit: int
    def __init__(self, dispatcher_id: _Optional[str] = ..., version: _Optional[str] = ..., capacity: _Optional[int] = ..., credit: _Optional[int] = ...) -> None: ...

class LeaseResult(_message.Message):
    __slots__ = ("lease_id", "notify_id", "attempt", "retry_after", "permanent", "deferred")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    PERMANENT_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    notify_id: str
    attempt: _notify_pb2.Attempt
    retry_after: _duration_pb2.Duration
    permanent: bool
    deferred: bool
    def __init__(self, lease_id: _Optional[str] = ..., notify_id: _Optional[str] = ..., attempt: _Optional[_Union[_notify_pb2.Attempt, _Mapping]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., permanent: _Optional[bool] = ..., deferred: _Optional[bool] = ...) -> None: ...

class LeaseExtension(_message.Message):
    __slots__ = ("lease_id", "extend_by")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    EXTEND_BY_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    extend_by: _duration_pb2.Duration
    def __init__(self, lease_id: _Optional[str] = ..., extend_by: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LeaseRequest(_message.Message):
    __slots__ = ("hello", "credit", "results", "extensions", "draining")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    hello: DispatcherHello
    credit: int
    results: _containers.RepeatedCompositeFieldContainer[LeaseResult]
    extensions: _containers.RepeatedCompositeFieldContainer[LeaseExtension]
    draining: bool
    def __init__(self, hello: _Optional[_Union[DispatcherHello, _Mapping]] = ..., credit: _Optional[int] = ..., results: _Optional[_Iterable[_Union[LeaseResult, _Mapping]]] = ..., extensions: _Optional[_Iterable[_Union[LeaseExtension, _Mapping]]] = ..., draining: _Optional[bool] = ...) -> None: ...

class LeaseGrant(_message.Message):
    __slots__ = ("lease_id", "notify", "attempt", "deadline")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    notify: _notify_pb2.Notify
    attempt: int
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, lease_id: _Optional[str] = ..., notify: _Optional[_Union[_notify_pb2.Notify, _Mapping]] = ..., attempt: _Optional[int] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LeaseResponse(_message.Message):
    __slots__ = ("grants", "acked_lease_ids", "revoked_lease_ids", "drain")
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    ACKED_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[LeaseGrant]
    acked_lease_ids: _containers.RepeatedScalarFieldContainer[str]
    revoked_lease_ids: _containers.RepeatedScalarFieldContainer[str]
    drain: bool
    def __init__(self, grants: _Optional[_Iterable[_Union[LeaseGrant, _Mapping]]] = ..., acked_lease_ids: _Optional[_Iterable[str]] = ..., revoked_lease_ids: _Optional[_Iterable[str]] = ..., drain: _Optional[bool] = ...) -> None: ...
