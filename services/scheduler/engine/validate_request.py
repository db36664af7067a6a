"""HTTP request checks of the validation layer (validate.py): method, URL, headers, body, JSON.

Split from validate.py for size; validate.py is the layer callers use. The same rules serve
a domain Spec and a caller's protobuf message: maps may be dicts or protobuf maps."""

from __future__ import annotations

import functools
import json
import re
from urllib.parse import urlsplit

from .limits import Limits, show
from .model import METHODS

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed in values
ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RESERVED_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "notify-id", "notify-attempt"}
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_JSON_NESTING = re.compile(r"[\[\]{}]")


def check_request(method, url, headers, body, json_body, form, add, limits: Limits) -> None:
    if method not in METHODS:
        add("request.method", f"unknown method {show(method)}; use one of {', '.join(METHODS)}")
    check_url(url, "request.url", add, limits)
    if len(headers):
        _check_headers(headers, add, limits)
    if len(form) > limits.max_form_fields:
        add("request.form_body", f"{len(form)} fields; at most {limits.max_form_fields}")
    if (1 if body else 0) + (1 if json_body else 0) + (1 if len(form) else 0) > 1:
        add("request.body", "set only one of body, json_body and form_body")
    size = len(body) + len(json_body.encode("utf-8", "replace"))
    if len(form):
        size += sum(len(k) + len(v) for k, v in form.items())
    if size > limits.max_body_bytes:
        add("request.body", f"body is {size} bytes; the limit is {limits.max_body_bytes}")
    elif json_body:
        problem = json_problem(json_body, limits.max_json_depth)
        if problem:
            add("request.json_body", problem)


def _check_headers(headers, add, limits: Limits) -> None:
    if len(headers) > limits.max_headers:
        add("request.headers", f"{len(headers)} headers; at most {limits.max_headers}")
    else:
        for name, value in headers.items():
            field = f"request.headers[{show(name)}]"
            if not _TOKEN.fullmatch(name):
                add(field, "header name must be an HTTP token (no spaces or control characters)")
            elif name.lower() in _RESERVED_HEADERS:
                add(field, "header is set by NotifyAgent and cannot be given")
            if _CONTROL.search(value):
                add(field, "header value contains control characters")
    header_bytes = sum(len(k) + len(v) for k, v in headers.items())
    if header_bytes > limits.max_header_bytes:
        add("request.headers", f"headers take {header_bytes} bytes; at most {limits.max_header_bytes}")


def json_problem(text: str, max_depth: int) -> str:
    """Why text is not JSON NotifyAgent takes (empty when it is fine); never recurses deeper than max_depth."""
    if text.count("[") + text.count("{") > max_depth:  # else it cannot nest deeper: no need to look
        depth = deepest = 0
        for m in _JSON_NESTING.finditer(_JSON_STRING.sub("", text)):
            depth += 1 if m.group() in "[{" else -1
            deepest = max(deepest, depth)
        if deepest > max_depth:
            return f"nests deeper than {max_depth} levels"
    if text[:1] in ("{", "[") and _whole_value(text):  # the common case, without json.loads's Python around the scanner
        return ""
    try:
        json.loads(text)
    except (ValueError, RecursionError) as e:
        return f"not valid JSON: {str(e)[:100]}"
    return ""


_SCAN = json.JSONDecoder().scan_once  # json.loads's own scanner


def _whole_value(text: str) -> bool:
    """Whether json.loads(text) takes it because one JSON value starting at its first character ends at its
    last (False also for what json.loads may still take, e.g. trailing whitespace: it decides those)."""
    try:
        return _SCAN(text, 0)[1] == len(text)
    except (ValueError, RecursionError, StopIteration):
        return False


def check_url(url: str, fname: str, add, limits: Limits) -> None:
    problem = _url_problem(url, limits.max_url_length) if len(url) <= 512 else _url_problem.__wrapped__(url, limits.max_url_length)
    if problem:
        add(fname, problem)


@functools.lru_cache(maxsize=4096)
def _url_problem(url: str, max_length: int) -> str:
    """What is wrong with a target URL ('' when nothing); cached, as callers send a few URLs many times."""
    if not url:
        return "is required"
    if len(url) > max_length:
        return f"is longer than {max_length} characters"
    if ANY_CONTROL.search(url) or " " in url:
        return "contains spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as e:
        return f"cannot be parsed: {str(e)[:100]}"
    if parts.scheme not in ("http", "https"):
        return f"scheme must be http or https, not {show(parts.scheme) if parts.scheme else 'missing'}"
    if not host:
        return "has no host"
    if port == 0:
        return "port 0 is not a valid target"
    return ""
