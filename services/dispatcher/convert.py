"""protobuf <-> the dispatcher's domain (OutgoingCall, CallOutcome)."""

from __future__ import annotations

from urllib.parse import urlencode

from ..common.calls import DEFAULT_METHOD, DEFAULT_TIMEOUT_S, METHOD_BY_NUMBER
from ..v1 import dispatch_service_pb2 as dpb, notify_pb2 as pb
from .call import CallOutcome, ErrorKind, OutgoingCall

_PERMANENT = (ErrorKind.BLOCKED,)


def outgoing_call(grant: dpb.LeaseGrant) -> OutgoingCall:
    n = grant.notify
    r = n.request
    method = DEFAULT_METHOD if r.method == pb.HTTP_METHOD_UNSPECIFIED else METHOD_BY_NUMBER.get(r.method, "#invalid")
    headers = _copy(r.headers)
    query: dict[str, str] = {}
    body = r.body
    if r.json_body:
        body = r.json_body.encode()
        _default_header(headers, "Content-Type", "application/json")
    elif r.form_body:
        if method in ("GET", "HEAD"):
            query = _copy(r.form_body)
        else:
            body = urlencode(sorted(r.form_body.items())).encode()
            _default_header(headers, "Content-Type", "application/x-www-form-urlencoded")
    timeout = n.timeout.seconds + n.timeout.nanos / 1e9 if n.HasField("timeout") else DEFAULT_TIMEOUT_S
    d = grant.deadline
    return OutgoingCall(
        notify_id=n.id,
        attempt=grant.attempt,
        method=method,
        url=r.url,
        headers=headers,
        body=body,
        query=query,
        timeout=timeout,
        success_codes=tuple(n.success.status_codes),
        body_contains=n.success.body_contains,
        fire_and_forget=n.fire_and_forget,
        deadline=d.seconds + d.nanos / 1e9 if grant.HasField("deadline") else 0.0,
    )


def _copy(m) -> dict[str, str]:
    """A protobuf map as a dict (indexing by key is faster than the Mapping ABC's dict(m))."""
    return {k: m[k] for k in m} if len(m) else {}


def _default_header(headers: dict[str, str], name: str, value: str) -> None:
    if not any(k.lower() == name.lower() for k in headers):
        headers[name] = value


_TRANSPORT = frozenset({ErrorKind.TIMEOUT, ErrorKind.PROTOCOL, ErrorKind.CONNECT})


def lease_result(grant: dpb.LeaseGrant, outcome: CallOutcome, dispatcher_id: str) -> dpb.LeaseResult:
    kind = outcome.error_kind
    result = dpb.LeaseResult(lease_id=grant.lease_id, notify_id=grant.notify.id)
    if kind in _PERMANENT:
        result.permanent = True
    elif kind is ErrorKind.DEFERRED:
        result.deferred = True
    a = result.attempt  # filled in place: no Attempt built and then copied in
    a.number = grant.attempt
    a.dispatcher_id = dispatcher_id
    # An answer whose body could not be read (timeout, connection closed mid-body) is no
    # complete answer: reported as none, so it is retried like any transport error,
    # whatever the success criteria. The error keeps the status ("HTTP 200, then ...").
    if kind not in _TRANSPORT and outcome.status_code:
        a.status_code = outcome.status_code
    if outcome.error:
        a.error = outcome.error.replace("\x00", "")  # stores refuse NUL in text
    if outcome.snippet:
        a.response_snippet = outcome.snippet
    if outcome.success:
        a.success = True
    if outcome.headers:
        kept = a.response_headers
        for name, value in outcome.headers.items():  # not .update(): the Mapping ABC's is slow
            kept[name] = value
    start, end = int(outcome.start_time * 1e9), int(outcome.end_time * 1e9)
    a.start_time.FromNanoseconds(start)
    a.end_time.FromNanoseconds(end)
    a.latency.FromNanoseconds(end - start)
    if outcome.retry_after is not None:
        result.retry_after.FromNanoseconds(int(outcome.retry_after * 1e9))
    return result
