import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from notifyagent.v1 import notify_pb2 as _notify_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateNotifyRequest(_message.Message):
    __slots__ = ("notify", "request_id")
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    notify: _notify_pb2.Notify
    request_id: str
    def __init__(self, notify: _Optional[_Union[_notify_pb2.Notify, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateNotifyResponse(_message.Message):
    __slots__ = ("notify",)
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    notify: _notify_pb2.Notify
    def __init__(self, notify: _Optional[_Union[_notify_pb2.Notify, _Mapping]] = ...) -> None: ...

class BatchCreateNotifyRequest(_message.Message):
    __slots__ = ("requests", "group_key", "group_callback_url")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    GROUP_KEY_FIELD_NUMBER: _ClassVar[int]
    GROUP_CALLBACK_URL_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[CreateNotifyRequest]
    group_key: str
    group_callback_url: str
    def __init__(self, requests: _Optional[_Iterable[_Union[CreateNotifyRequest, _Mapping]]] = ..., group_key: _Optional[str] = ..., group_callback_url: _Optional[str] = ...) -> None: ...

class BatchCreateNotifyResponse(_message.Message):
    __slots__ = ("notifies",)
    NOTIFIES_FIELD_NUMBER: _ClassVar[int]
    notifies: _containers.RepeatedCompositeFieldContainer[_notify_pb2.Notify]
    def __init__(self, notifies: _Optional[_Iterable[_Union[_notify_pb2.Notify, _Mapping]]] = ...) -> None: ...

class TriggerRequest(_message.Message):
    __slots__ = ("trigger_key", "delay")
    TRIGGER_KEY_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    trigger_key: str
    delay: _duration_pb2.Duration
    def __init__(self, trigger_key: _Optional[str] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TriggerResponse(_message.Message):
    __slots__ = ("triggered",)
    TRIGGERED_FIELD_NUMBER: _ClassVar[int]
    triggered: int
    def __init__(self, triggered: _Optional[int] = ...) -> None: ...

class GetNotifyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetNotifyResponse(_message.Message):
    __slots__ = ("notify",)
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    notify: _notify_pb2.Notify
    def __init__(self, notify: _Optional[_Union[_notify_pb2.Notify, _Mapping]] = ...) -> None: ...

class ListNotifiesRequest(_message.Message):
    __slots__ = ("state", "queue", "trigger_key", "ordering_key", "page_size", "page_token", "group_key", "label")
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_KEY_FIELD_NUMBER: _ClassVar[int]
    ORDERING_KEY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    GROUP_KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    state: _notify_pb2.State
    queue: str
    trigger_key: str
    ordering_key: str
    page_size: int
    page_token: str
    group_key: str
    label: str
    def __init__(self, state: _Optional[_Union[_notify_pb2.State, str]] = ..., queue: _Optional[str] = ..., trigger_key: _Optional[str] = ..., ordering_key: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., group_key: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class ListNotifiesResponse(_message.Message):
    __slots__ = ("notifies", "next_page_token")
    NOTIFIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    notifies: _containers.RepeatedCompositeFieldContainer[_notify_pb2.Notify]
    next_page_token: str
    def __init__(self, notifies: _Optional[_Iterable[_Union[_notify_pb2.Notify, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelNotifyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelNotifyResponse(_message.Message):
    __slots__ = ("notify",)
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    notify: _notify_pb2.Notify
    def __init__(self, notify: _Optional[_Union[_notify_pb2.Notify, _Mapping]] = ...) -> None: ...

class RetryNotifyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RetryNotifyResponse(_message.Message):
    __slots__ = ("notify",)
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    notify: _notify_pb2.Notify
    def __init__(self, notify: _Optional[_Union[_notify_pb2.Notify, _Mapping]] = ...) -> None: ...

class UpdateNotifyRequest(_message.Message):
    __slots__ = ("notify", "update_mask")
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    notify: _notify_pb2.Notify
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, notify: _Optional[_Union[_notify_pb2.Notify, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateNotifyResponse(_message.Message):
    __slots__ = ("notify",)
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    notify: _notify_pb2.Notify
    def __init__(self, notify: _Optional[_Union[_notify_pb2.Notify, _Mapping]] = ...) -> None: ...

class GetGroupRequest(_message.Message):
    __slots__ = ("group_key",)
    GROUP_KEY_FIELD_NUMBER: _ClassVar[int]
    group_key: str
    def __init__(self, group_key: _Optional[str] = ...) -> None: ...

class GetGroupResponse(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: _notify_pb2.Group
    def __init__(self, group: _Optional[_Union[_notify_pb2.Group, _Mapping]] = ...) -> None: ...

class CancelGroupRequest(_message.Message):
    __slots__ = ("group_key",)
    GROUP_KEY_FIELD_NUMBER: _ClassVar[int]
    group_key: str
    def __init__(self, group_key: _Optional[str] = ...) -> None: ...

class CancelGroupResponse(_message.Message):
    __slots__ = ("cancelled", "group")
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    cancelled: int
    group: _notify_pb2.Group
    def __init__(self, cancelled: _Optional[int] = ..., group: _Optional[_Union[_notify_pb2.Group, _Mapping]] = ...) -> None: ...
