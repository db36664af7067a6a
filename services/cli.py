"""`notifyagent`: run the services, or talk to a running scheduler.

    notifyagent dev | scheduler | dispatcher      run (settings from flags, NOTIFY_*, --config)
    notifyagent send URL [--json ...] [--delay 5s] ...
    notifyagent get ID | list | trigger KEY | cancel ID | retry ID | status
    notifyagent group KEY [--cancel]
    notifyagent token create NAME --scopes client[,read,dispatcher,admin]

Client verbs send NOTIFY_TOKEN as `authorization: Bearer` and use TLS when
NOTIFY_TLS_CA is set (presenting NOTIFY_TLS_CERT/KEY under mTLS).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timezone

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from . import __version__
from .common import auth, tls
from .common.calls import DEFAULT_METHOD, METHODS
from .common.config import ConfigError, add_flags, load
from .common.grpcutil import DEFAULT_MAX_MESSAGE_BYTES, message_options
from .v1 import admin_service_pb2 as admin_pb, admin_service_pb2_grpc as admin_grpc
from .v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc as api_grpc

DEFAULT_ADDR = "127.0.0.1:50051"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 500ms, 5s, 10m, 2h")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_pair(sep: str):
    def parse(text: str) -> tuple[str, str]:
        key, found, value = text.partition(sep)
        if not found or not key:
            raise argparse.ArgumentTypeError(f"{text!r} must be NAME{sep}VALUE")
        return key.strip(), value.lstrip() if sep == ":" else value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="notifyagent", description="Durable HTTP calls on other services' behalf.")
    p.add_argument("--version", action="version", version=f"notifyagent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for role, text in (
        ("dev", "run everything in one process (scheduler + dispatcher + memory registry + SQLite)"),
        ("scheduler", "run the scheduler alone"),
        ("dispatcher", "run a dispatcher alone (finds the scheduler through NOTIFY_REGISTRY)"),
    ):
        add_flags(sub.add_parser(role, help=text, description=text), role)

    def client(name: str, text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=text, description=text)
        sp.add_argument("--addr", default=None, help=f"scheduler gRPC address [NOTIFY_GRPC_ADDR; default {DEFAULT_ADDR}]")
        return sp

    s = client("send", "create a notify")
    s.add_argument("url")
    s.add_argument("-X", "--method", default=DEFAULT_METHOD, choices=METHODS)
    body = s.add_mutually_exclusive_group()
    body.add_argument("--json", dest="json_body", help="JSON body, sent byte-exact")
    body.add_argument("--data", help="raw body (use @file to read a file)")
    body.add_argument("--form", action="append", type=parse_pair("="), help="form field NAME=VALUE (repeatable)")
    s.add_argument("-H", "--header", action="append", type=parse_pair(":"), default=[], help="NAME: VALUE (repeatable)")
    when = s.add_mutually_exclusive_group()
    when.add_argument("--delay", type=parse_duration, help="send after this long (500ms, 5s, 10m, 2h)")
    when.add_argument("--at", help="send at this ISO 8601 time, e.g. 2026-12-01T09:00:00Z")
    when.add_argument("--trigger", help="wait for `notifyagent trigger KEY`")
    s.add_argument("--ordering-key", default="")
    s.add_argument("--queue", default="")
    s.add_argument("--request-id", default="", help="idempotency key: the same key returns the first notify")
    s.add_argument("--max-attempts", type=int, default=0)
    s.add_argument("--timeout", type=parse_duration, help="per-attempt timeout (default 30s)")
    s.add_argument("--fire-and-forget", action="store_true")
    s.add_argument("--label", action="append", type=parse_pair("="), default=[])
    s.add_argument("--group", default="", help="fan-out group key (see `notifyagent group KEY`)")
    client("get", "show a notify and its attempts").add_argument("id")
    ls = client("list", "list notifies, oldest first")
    ls.add_argument("--state", choices=[n.removeprefix("STATE_") for n in pb.State.keys()[1:]])
    ls.add_argument("--queue", default="")
    ls.add_argument("--trigger-key", default="")
    ls.add_argument("--group", default="", help="only the members of this fan-out group")
    ls.add_argument("--page-size", type=int, default=50)
    ls.add_argument("--page-token", default="")
    t = client("trigger", "fire every notify waiting on a trigger key")
    t.add_argument("key")
    t.add_argument("--delay", type=parse_duration, default=0.0)
    client("cancel", "cancel a notify that has not finished").add_argument("id")
    client("retry", "send a FAILED or CANCELLED notify again").add_argument("id")
    client("status", "show the scheduler's status")
    tok = sub.add_parser("token", help="make tokens for NOTIFY_TOKENS_FILE", description="make tokens for NOTIFY_TOKENS_FILE")
    tok_sub = tok.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = tok_sub.add_parser("create", help="print a new random token and its tokens-file line")
    create.add_argument("name", help="a name for logs and Notify.created_by (A-Z a-z 0-9 _ . @ -)")
    create.add_argument("--scopes", default="client", help=f"comma-separated: {', '.join(auth.SCOPES)} [default client]")
    g = client("group", "show a fan-out group: members by state, done and when")
    g.add_argument("key")
    g.add_argument("--cancel", action="store_true", help="cancel every member that has not finished")
    return p


def _notify_from_args(a: argparse.Namespace) -> pb.Notify:
    n = pb.Notify(ordering_key=a.ordering_key, queue=a.queue, fire_and_forget=a.fire_and_forget, labels=dict(a.label),
                  group_key=a.group)  # fmt: skip
    n.request.method = pb.HttpMethod.Value(f"HTTP_METHOD_{a.method}")
    n.request.url = a.url
    n.request.headers.update(dict(a.header))
    if a.json_body is not None:
        n.request.json_body = a.json_body
    elif a.data is not None:
        n.request.body = open(a.data[1:], "rb").read() if a.data.startswith("@") else a.data.encode()
    elif a.form:
        n.request.form_body.update(dict(a.form))
    if a.delay is not None:
        n.delay.FromNanoseconds(int(a.delay * 1e9))
    elif a.at:
        at = datetime.fromisoformat(a.at.replace("Z", "+00:00"))
        n.deliver_at.FromDatetime(at if at.tzinfo else at.replace(tzinfo=timezone.utc))
    elif a.trigger:
        n.trigger_key = a.trigger
    if a.max_attempts:
        n.retry.max_attempts = a.max_attempts
    if a.timeout is not None:
        n.timeout.FromNanoseconds(int(a.timeout * 1e9))
    return n


def _call(a: argparse.Namespace, channel: grpc.Channel, md: tuple = ()):
    notify = api_grpc.NotifyServiceStub(channel)
    if a.command == "send":
        return notify.CreateNotify(api.CreateNotifyRequest(notify=_notify_from_args(a), request_id=a.request_id), metadata=md)
    if a.command == "get":
        return notify.GetNotify(api.GetNotifyRequest(id=a.id), metadata=md)
    if a.command == "list":
        state = pb.State.Value(f"STATE_{a.state}") if a.state else 0
        return notify.ListNotifies(api.ListNotifiesRequest(
            state=state, queue=a.queue, trigger_key=a.trigger_key, page_size=a.page_size, page_token=a.page_token,
            group_key=a.group), metadata=md)  # fmt: skip
    if a.command == "trigger":
        req = api.TriggerRequest(trigger_key=a.key)
        req.delay.FromNanoseconds(int(a.delay * 1e9))
        return notify.Trigger(req, metadata=md)
    if a.command == "cancel":
        return notify.CancelNotify(api.CancelNotifyRequest(id=a.id), metadata=md)
    if a.command == "retry":
        return notify.RetryNotify(api.RetryNotifyRequest(id=a.id), metadata=md)
    if a.command == "group" and a.cancel:
        return notify.CancelGroup(api.CancelGroupRequest(group_key=a.key), metadata=md)
    if a.command == "group":
        return notify.GetGroup(api.GetGroupRequest(group_key=a.key), metadata=md)
    return admin_grpc.AdminServiceStub(channel).GetStatus(admin_pb.GetStatusRequest(), metadata=md)


def _safe_to_repeat(a: argparse.Namespace) -> bool:
    if a.command == "group":
        return not a.cancel
    return a.command not in ("send", "trigger", "cancel", "retry") or (a.command == "send" and bool(a.request_id))


def run_client(a: argparse.Namespace) -> int:
    import os

    addr = a.addr or os.environ.get("NOTIFY_GRPC_ADDR") or DEFAULT_ADDR
    unavailable = lambda e: isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.UNAVAILABLE  # noqa: E731
    env = os.environ.get
    md = auth.call_metadata(env("NOTIFY_TOKEN", ""))
    try:
        creds = tls.client_credentials(env("NOTIFY_TLS_CA", ""), env("NOTIFY_TLS_CERT", ""), env("NOTIFY_TLS_KEY", ""))
        max_message = int(env("NOTIFY_MAX_MESSAGE_BYTES") or DEFAULT_MAX_MESSAGE_BYTES)
    except ValueError as e:  # ConfigError is one
        print(f"error: {e if isinstance(e, ConfigError) else 'NOTIFY_MAX_MESSAGE_BYTES must be a number of bytes'}", file=sys.stderr)
        return 2
    options = message_options(max_message)
    with (grpc.secure_channel(addr, creds, options=options) if creds else grpc.insecure_channel(addr, options=options)) as channel:
        try:
            for attempt in Retrying(
                retry=retry_if_exception(unavailable), reraise=True,
                stop=stop_after_attempt(3 if _safe_to_repeat(a) else 1), wait=wait_exponential_jitter(multiplier=0.2, max=2, jitter=0.1),
            ):  # fmt: skip
                with attempt:
                    resp = _call(a, channel, md)
        except grpc.RpcError as e:
            return _print_error(e, addr)
    print(json_format.MessageToJson(resp, indent=2, always_print_fields_with_no_presence=a.command in ("trigger", "group")))
    return 0


def _print_error(e: grpc.RpcError, addr: str) -> int:
    print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
    status = rpc_status.from_call(e)
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            for v in bad.field_violations:
                print(f"  {v.field}: {v.description}", file=sys.stderr)
    if e.code() == grpc.StatusCode.UNAVAILABLE:
        print(f"  is the scheduler running at {addr}? start one with `notifyagent dev`", file=sys.stderr)
    elif e.code() == grpc.StatusCode.UNAUTHENTICATED:
        print("  set NOTIFY_TOKEN to a token from the scheduler's NOTIFY_TOKENS_FILE", file=sys.stderr)
    return 1


def token_create(a: argparse.Namespace) -> int:
    try:
        token, line = auth.new_token(a.name, a.scopes)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"token: {token}")
    print(f"line:  {line}")
    print("Add the line to NOTIFY_TOKENS_FILE (then SIGHUP the scheduler); give the token to the caller as NOTIFY_TOKEN.",
          file=sys.stderr)  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("dev", "scheduler", "dispatcher"):
        from .runner import ROLE_DEFAULTS, run

        flags = {k: v for k, v in vars(args).items() if k != "command"}
        try:
            settings = load(flags, **ROLE_DEFAULTS.get(args.command, {}))
            if args.command in ("dev", "scheduler"):
                auth.check_exposure(settings)
            run(args.command, settings, flags)
        except ConfigError as e:  # also a bad tokens or certificate file, or a wrong NOTIFY_SECRET_KEY, at start
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "token":
        return token_create(args)
    return run_client(args)


if __name__ == "__main__":
    sys.exit(main())
