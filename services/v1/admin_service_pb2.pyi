import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from notifyagent.v1 import notify_pb2 as _notify_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DrainDispatchersRequest(_message.Message):
    __slots__ = ("dispatcher_id",)
    DISPATCHER_ID_FIELD_NUMBER: _ClassVar[int]
    dispatcher_id: str
    def __init__(self, dispatcher_id: _Optional[str] = ...) -> None: ...

class DrainDispatchersResponse(_message.Message):
    __slots__ = ("dispatcher_ids",)
    DISPATCHER_IDS_FIELD_NUMBER: _ClassVar[int]
    dispatcher_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dispatcher_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShutdownResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PauseQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: QueueStats
    def __init__(self, queue: _Optional[_Union[QueueStats, _Mapping]] = ...) -> None: ...

class ResumeQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResumeQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: QueueStats
    def __init__(self, queue: _Optional[_Union[QueueStats, _Mapping]] = ...) -> None: ...

class SetQueueLimitsRequest(_message.Message):
    __slots__ = ("name", "max_concurrent", "rate", "burst")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_concurrent: int
    rate: float
    burst: int
    def __init__(self, name: _Optional[str] = ..., max_concurrent: _Optional[int] = ..., rate: _Optional[float] = ..., burst: _Optional[int] = ...) -> None: ...

class SetQueueLimitsResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: QueueStats
    def __init__(self, queue: _Optional[_Union[QueueStats, _Mapping]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StateCount(_message.Message):
    __slots__ = ("state", "count")
    STATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    state: _notify_pb2.State
    count: int
    def __init__(self, state: _Optional[_Union[_notify_pb2.State, str]] = ..., count: _Optional[int] = ...) -> None: ...

class QueueStats(_message.Message):
    __slots__ = ("name", "pending", "in_flight", "scheduled", "failed", "succeeded", "paused", "max_concurrent", "rate", "burst")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    name: str
    pending: int
    in_flight: int
    scheduled: int
    failed: int
    succeeded: int
    paused: bool
    max_concurrent: int
    rate: float
    burst: int
    def __init__(self, name: _Optional[str] = ..., pending: _Optional[int] = ..., in_flight: _Optional[int] = ..., scheduled: _Optional[int] = ..., failed: _Optional[int] = ..., succeeded: _Optional[int] = ..., paused: _Optional[bool] = ..., max_concurrent: _Optional[int] = ..., rate: _Optional[float] = ..., burst: _Optional[int] = ...) -> None: ...

class DispatcherInfo(_message.Message):
    __slots__ = ("dispatcher_id", "version", "capacity", "credit", "leases", "connect_time", "draining")
    DISPATCHER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    CONNECT_TIME_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    dispatcher_id: str
    version: str
    capacity: int
    credit: int
    leases: int
    connect_time: _timestamp_pb2.Timestamp
    draining: bool
    def __init__(self, dispatcher_id: _Optional[str] = ..., version: _Optional[str] = ..., capacity: _Optional[int] = ..., credit: _Optional[int] = ..., leases: _Optional[int] = ..., connect_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., draining: _Optional[bool] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("start_time", "pid", "version", "counts", "sent_ok", "sent_failed", "dispatchers", "queues", "wheel_size", "shutting_down", "schedulers")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SENT_OK_FIELD_NUMBER: _ClassVar[int]
    SENT_FAILED_FIELD_NUMBER: _ClassVar[int]
    DISPATCHERS_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    WHEEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHUTTING_DOWN_FIELD_NUMBER: _ClassVar[int]
    SCHEDULERS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    pid: int
    version: str
    counts: _containers.RepeatedCompositeFieldContainer[StateCount]
    sent_ok: int
    sent_failed: int
    dispatchers: _containers.RepeatedCompositeFieldContainer[DispatcherInfo]
    queues: _containers.RepeatedCompositeFieldContainer[QueueStats]
    wheel_size: int
    shutting_down: bool
    schedulers: _containers.RepeatedCompositeFieldContainer[SchedulerInfo]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pid: _Optional[int] = ..., version: _Optional[str] = ..., counts: _Optional[_Iterable[_Union[StateCount, _Mapping]]] = ..., sent_ok: _Optional[int] = ..., sent_failed: _Optional[int] = ..., dispatchers: _Optional[_Iterable[_Union[DispatcherInfo, _Mapping]]] = ..., queues: _Optional[_Iterable[_Union[QueueStats, _Mapping]]] = ..., wheel_size: _Optional[int] = ..., shutting_down: _Optional[bool] = ..., schedulers: _Optional[_Iterable[_Union[SchedulerInfo, _Mapping]]] = ...) -> None: ...

class SchedulerInfo(_message.Message):
    __slots__ = ("owner_id", "address", "partitions", "pid", "sent_ok", "sent_failed", "dispatchers", "leases")
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SENT_OK_FIELD_NUMBER: _ClassVar[int]
    SENT_FAILED_FIELD_NUMBER: _ClassVar[int]
    DISPATCHERS_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    owner_id: str
    address: str
    partitions: _containers.RepeatedScalarFieldContainer[int]
    pid: int
    sent_ok: int
    sent_failed: int
    dispatchers: int
    leases: int
    def __init__(self, owner_id: _Optional[str] = ..., address: _Optional[str] = ..., partitions: _Optional[_Iterable[int]] = ..., pid: _Optional[int] = ..., sent_ok: _Optional[int] = ..., sent_failed: _Optional[int] = ..., dispatchers: _Optional[int] = ..., leases: _Optional[int] = ...) -> None: ...
