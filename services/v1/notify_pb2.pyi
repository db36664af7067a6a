import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HttpMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HTTP_METHOD_UNSPECIFIED: _ClassVar[HttpMethod]
    HTTP_METHOD_GET: _ClassVar[HttpMethod]
    HTTP_METHOD_POST: _ClassVar[HttpMethod]
    HTTP_METHOD_PUT: _ClassVar[HttpMethod]
    HTTP_METHOD_PATCH: _ClassVar[HttpMethod]
    HTTP_METHOD_DELETE: _ClassVar[HttpMethod]
    HTTP_METHOD_HEAD: _ClassVar[HttpMethod]

class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_UNSPECIFIED: _ClassVar[State]
    STATE_SCHEDULED: _ClassVar[State]
    STATE_WAITING_TRIGGER: _ClassVar[State]
    STATE_PENDING: _ClassVar[State]
    STATE_DELIVERING: _ClassVar[State]
    STATE_RETRY_WAIT: _ClassVar[State]
    STATE_SUCCEEDED: _ClassVar[State]
    STATE_FAILED: _ClassVar[State]
    STATE_CANCELLED: _ClassVar[State]
HTTP_METHOD_UNSPECIFIED: HttpMethod
HTTP_METHOD_GET: HttpMethod
HTTP_METHOD_POST: HttpMethod
HTTP_METHOD_PUT: HttpMethod
HTTP_METHOD_PATCH: HttpMethod
HTTP_METHOD_DELETE: HttpMethod
HTTP_METHOD_HEAD: HttpMethod
STATE_UNSPECIFIED: State
STATE_SCHEDULED: State
STATE_WAITING_TRIGGER: State
STATE_PENDING: State
STATE_DELIVERING: State
STATE_RETRY_WAIT: State
STATE_SUCCEEDED: State
STATE_FAILED: State
STATE_CANCELLED: State

class HttpRequest(_message.Message):
    __slots__ = ("method", "url", "headers", "body", "json_body", "form_body")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class FormBodyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METHOD_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    JSON_BODY_FIELD_NUMBER: _ClassVar[int]
    FORM_BODY_FIELD_NUMBER: _ClassVar[int]
    method: HttpMethod
    url: str
    headers: _containers.ScalarMap[str, str]
    body: bytes
    json_body: str
    form_body: _containers.ScalarMap[str, str]
    def __init__(self, method: _Optional[_Union[HttpMethod, str]] = ..., url: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., body: _Optional[bytes] = ..., json_body: _Optional[str] = ..., form_body: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "min_backoff", "max_backoff", "multiplier", "max_retry_duration", "retry_codes")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MIN_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRY_DURATION_FIELD_NUMBER: _ClassVar[int]
    RETRY_CODES_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    min_backoff: _duration_pb2.Duration
    max_backoff: _duration_pb2.Duration
    multiplier: float
    max_retry_duration: _duration_pb2.Duration
    retry_codes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, max_attempts: _Optional[int] = ..., min_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., multiplier: _Optional[float] = ..., max_retry_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_codes: _Optional[_Iterable[int]] = ...) -> None: ...

class SuccessCriteria(_message.Message):
    __slots__ = ("status_codes", "body_contains", "mismatch_final")
    STATUS_CODES_FIELD_NUMBER: _ClassVar[int]
    BODY_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FINAL_FIELD_NUMBER: _ClassVar[int]
    status_codes: _containers.RepeatedScalarFieldContainer[int]
    body_contains: str
    mismatch_final: bool
    def __init__(self, status_codes: _Optional[_Iterable[int]] = ..., body_contains: _Optional[str] = ..., mismatch_final: _Optional[bool] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("number", "start_time", "end_time", "dispatcher_id", "status_code", "error", "latency", "response_snippet", "success", "response_headers")
    class ResponseHeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    DISPATCHER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_SNIPPET_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_HEADERS_FIELD_NUMBER: _ClassVar[int]
    number: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    dispatcher_id: str
    status_code: int
    error: str
    latency: _duration_pb2.Duration
    response_snippet: bytes
    success: bool
    response_headers: _containers.ScalarMap[str, str]
    def __init__(self, number: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dispatcher_id: _Optional[str] = ..., status_code: _Optional[int] = ..., error: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., response_snippet: _Optional[bytes] = ..., success: _Optional[bool] = ..., response_headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Notify(_message.Message):
    __slots__ = ("id", "request", "deliver_at", "delay", "trigger_key", "ordering_key", "queue", "state", "retry", "success", "fire_and_forget", "timeout", "expire_at", "callback_url", "labels", "attempts", "create_time", "next_attempt_time", "complete_time", "attempt_count", "group_key", "created_by")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    DELIVER_AT_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_KEY_FIELD_NUMBER: _ClassVar[int]
    ORDERING_KEY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FIRE_AND_FORGET_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_URL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TIME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    GROUP_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    request: HttpRequest
    deliver_at: _timestamp_pb2.Timestamp
    delay: _duration_pb2.Duration
    trigger_key: str
    ordering_key: str
    queue: str
    state: State
    retry: RetryPolicy
    success: SuccessCriteria
    fire_and_forget: bool
    timeout: _duration_pb2.Duration
    expire_at: _timestamp_pb2.Timestamp
    callback_url: str
    labels: _containers.ScalarMap[str, str]
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    create_time: _timestamp_pb2.Timestamp
    next_attempt_time: _timestamp_pb2.Timestamp
    complete_time: _timestamp_pb2.Timestamp
    attempt_count: int
    group_key: str
    created_by: str
    def __init__(self, id: _Optional[str] = ..., request: _Optional[_Union[HttpRequest, _Mapping]] = ..., deliver_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., trigger_key: _Optional[str] = ..., ordering_key: _Optional[str] = ..., queue: _Optional[str] = ..., state: _Optional[_Union[State, str]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., success: _Optional[_Union[SuccessCriteria, _Mapping]] = ..., fire_and_forget: _Optional[bool] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., expire_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., callback_url: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., complete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempt_count: _Optional[int] = ..., group_key: _Optional[str] = ..., created_by: _Optional[str] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("group_key", "counts", "total", "done", "done_time", "callback_url", "callback_time", "callback_notify_id")
    class StateCount(_message.Message):
        __slots__ = ("state", "count")
        STATE_FIELD_NUMBER: _ClassVar[int]
        COUNT_FIELD_NUMBER: _ClassVar[int]
        state: State
        count: int
        def __init__(self, state: _Optional[_Union[State, str]] = ..., count: _Optional[int] = ...) -> None: ...
    GROUP_KEY_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    DONE_TIME_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_URL_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_TIME_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_NOTIFY_ID_FIELD_NUMBER: _ClassVar[int]
    group_key: str
    counts: _containers.RepeatedCompositeFieldContainer[Group.StateCount]
    total: int
    done: bool
    done_time: _timestamp_pb2.Timestamp
    callback_url: str
    callback_time: _timestamp_pb2.Timestamp
    callback_notify_id: str
    def __init__(self, group_key: _Optional[str] = ..., counts: _Optional[_Iterable[_Union[Group.StateCount, _Mapping]]] = ..., total: _Optional[int] = ..., done: _Optional[bool] = ..., done_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., callback_url: _Optional[str] = ..., callback_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., callback_notify_id: _Optional[str] = ...) -> None: ...
