"""`notifyagent`: run the services, or talk to a running scheduler.

    notifyagent dev | scheduler | dispatcher      run (settings from flags, NOTIFY_*, --config)
    notifyagent send URL [--json ...] [--delay 5s] ...
    notifyagent get ID | list | trigger KEY | cancel ID | retry ID | status
    notifyagent group KEY [--cancel]
    notifyagent token create NAME --scopes client[,read,dispatcher,admin]

Client verbs send NOTIFY_TOKEN as `authorization: Bearer` and use TLS when
NOTIFY_TLS_CA is set (presenting NOTIFY_TLS_CERT/KEY under mTLS).

Exit codes: 0 done; 1 the scheduler answered an error (printed with its field
violations); 2 an operator's mistake (a bad setting or value, a port in use, a
store or registry that does not answer), printed as one line naming it.
`--debug` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from . import __version__
from .common import auth
from .common.calls import DEFAULT_METHOD, METHODS
from .common.config import DEFAULT_ADDR, ConfigError, add_flags, load
from .v1 import notify_pb2 as pb

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}  # fmt: skip


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad value in one line (no usage block) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 500ms, 5s, 10m, 2h")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_time(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time; write e.g. 2026-12-01T09:00:00Z") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def parse_data(text: str) -> bytes:
    if not text.startswith("@"):
        return text.encode()
    try:
        return Path(text[1:]).read_bytes()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {text[1:]!r}: {e.strerror or e}") from None


def parse_pair(sep: str):
    def parse(text: str) -> tuple[str, str]:
        key, found, value = text.partition(sep)
        if not found or not key:
            raise argparse.ArgumentTypeError(f"{text!r} must be NAME{sep}VALUE")
        return key.strip(), value.lstrip() if sep == ":" else value
    return parse


def build_parser() -> argparse.ArgumentParser:
    from .common.config import ROLE_DEFAULTS

    debug = Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error, not just its one line")  # fmt: skip
    p = Parser(prog="notifyagent", description="Durable HTTP calls on other services' behalf.", parents=[debug],
               epilog="Exit codes: 0 done, 1 the scheduler answered an error, 2 a bad setting, value or start-up "
                      "problem (one line; --debug shows the traceback).")  # fmt: skip
    p.add_argument("--version", action="version", version=f"notifyagent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for role, text in (
        ("dev", "run everything in one process (scheduler + dispatcher + memory registry + SQLite)"),
        ("scheduler", "run the scheduler alone"),
        ("dispatcher", "run a dispatcher alone (finds the scheduler through NOTIFY_REGISTRY)"),
    ):
        add_flags(sub.add_parser(role, help=text, description=text, parents=[debug]), role, ROLE_DEFAULTS.get(role))

    def client(name: str, text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=text, description=text, parents=[debug])
        sp.add_argument("--addr", default=None, help=f"scheduler gRPC address [NOTIFY_GRPC_ADDR; default {DEFAULT_ADDR}]; "
                        "NOTIFY_TOKEN, NOTIFY_TLS_CA, NOTIFY_TLS_CERT and NOTIFY_TLS_KEY are read too")  # fmt: skip
        return sp

    s = client("send", "create a notify")
    s.add_argument("url", help="the URL to call (http or https)")
    s.add_argument("-X", "--method", default=DEFAULT_METHOD, type=str.upper, choices=METHODS,
                   help=f"HTTP method, any case (default {DEFAULT_METHOD})")  # fmt: skip
    body = s.add_mutually_exclusive_group()
    body.add_argument("--json", dest="json_body", help="JSON body, sent byte-exact")
    body.add_argument("--data", type=parse_data, help="raw body (use @file to read a file)")
    body.add_argument("--form", action="append", type=parse_pair("="), help="form field NAME=VALUE (repeatable)")
    s.add_argument("-H", "--header", action="append", type=parse_pair(":"), default=[], help="NAME: VALUE (repeatable)")
    when = s.add_mutually_exclusive_group()
    when.add_argument("--delay", type=parse_duration, help="send after this long (500ms, 5s, 10m, 2h)")
    when.add_argument("--at", type=parse_time, help="send at this ISO 8601 time, e.g. 2026-12-01T09:00:00Z (UTC if no zone)")
    when.add_argument("--trigger", help="wait for `notifyagent trigger KEY`")
    s.add_argument("--ordering-key", default="", help="notifies with the same key are delivered one at a time, in order")
    s.add_argument("--queue", default="", help="named queue with its own limits (default: default)")
    s.add_argument("--request-id", default="", help="idempotency key: the same key returns the first notify")
    s.add_argument("--max-attempts", type=int, default=0, help="give up after this many attempts (default 20)")
    s.add_argument("--timeout", type=parse_duration, help="per-attempt timeout (default 30s)")
    s.add_argument("--fire-and-forget", action="store_true", help="send once; any answer counts")
    s.add_argument("--label", action="append", type=parse_pair("="), default=[], help="label NAME=VALUE (repeatable)")
    s.add_argument("--group", default="", help="fan-out group key (see `notifyagent group KEY`)")
    client("get", "show a notify and its attempts").add_argument("id")
    ls = client("list", "list notifies, oldest first")
    states = [n.removeprefix("STATE_") for n in pb.State.keys()[1:]]
    ls.add_argument("--state", type=str.upper, choices=states, help="only this state")
    ls.add_argument("--queue", default="", help="only this queue")
    ls.add_argument("--trigger-key", default="", help="only notifies waiting on this trigger key")
    ls.add_argument("--group", default="", help="only the members of this fan-out group")
    ls.add_argument("--label", default="", help="only notifies with this label: key=value, or key for any value")
    ls.add_argument("--page-size", type=int, default=50, help="at most this many (1-1000)")
    ls.add_argument("--page-token", default="", help="next_page_token of the previous page")
    t = client("trigger", "fire every notify waiting on a trigger key")
    t.add_argument("key")
    t.add_argument("--delay", type=parse_duration, default=0.0, help="fire them after this long")
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
    from .client import notify

    return notify(
        a.url, method=a.method, headers=dict(a.header), json=a.json_body, body=a.data,
        form=dict(a.form) if a.form else None, delay=a.delay, at=a.at, trigger_key=a.trigger,
        ordering_key=a.ordering_key, queue=a.queue, max_attempts=a.max_attempts, timeout=a.timeout,
        fire_and_forget=a.fire_and_forget, labels=dict(a.label), group_key=a.group,
    )  # fmt: skip


def _call(a: argparse.Namespace, client) -> Message:
    from .v1 import notify_service_pb2 as api

    if a.command == "send":
        return api.CreateNotifyResponse(notify=client.create(_notify_from_args(a), request_id=a.request_id))
    if a.command == "get":
        return api.GetNotifyResponse(notify=client.get(a.id))
    if a.command == "list":
        return client.list(state=a.state or 0, queue=a.queue, trigger_key=a.trigger_key, page_size=a.page_size,
                           page_token=a.page_token, group_key=a.group, label=a.label)  # fmt: skip
    if a.command == "trigger":
        return api.TriggerResponse(triggered=client.trigger(a.key, delay=a.delay))
    if a.command == "cancel":
        return api.CancelNotifyResponse(notify=client.cancel(a.id))
    if a.command == "retry":
        return api.RetryNotifyResponse(notify=client.retry(a.id))
    if a.command == "group":
        return client.cancel_group(a.key) if a.cancel else api.GetGroupResponse(group=client.get_group(a.key))
    return client.status()


def shown(message: Message) -> dict[str, Any]:
    """Proto3 JSON as grpcurl prints it (proto field names, zero values), with 64-bit counts as
    numbers and a response snippet that is text shown as text."""
    doc = json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    _numbers_and_text(message, doc)
    return doc


def _numbers_and_text(message: Message, doc: dict[str, Any]) -> None:
    ordered = {f.name: doc.pop(f.name) for f in message.DESCRIPTOR.fields if f.name in doc}  # proto order, as grpcurl
    doc.update(ordered)
    for field in message.DESCRIPTOR.fields:
        if field.name not in doc:
            continue
        repeated = field.is_repeated
        if field.type in _INT64:
            doc[field.name] = [int(v) for v in doc[field.name]] if repeated else int(doc[field.name])
        elif field.name == "response_snippet":
            try:
                doc[field.name] = getattr(message, field.name).decode("utf-8")
            except UnicodeDecodeError:
                pass  # binary: stays base64
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue  # Timestamp, Duration, ...: their JSON strings stay
            values = getattr(message, field.name)
            if repeated:
                for sub, sub_doc in zip(values, doc[field.name]):
                    _numbers_and_text(sub, sub_doc)
            else:
                _numbers_and_text(values, doc[field.name])


def run_client(a: argparse.Namespace) -> int:
    from .client import Client, violations

    try:
        client = Client(a.addr)
    except ValueError as e:  # unreadable TLS files and the like
        raise ConfigError(str(e)) from e
    with client:
        try:
            resp = _call(a, client)
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            for field, description in violations(e):
                print(f"  {field}: {description}", file=sys.stderr)
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                print(f"  is the scheduler running at {client.connection.address}? start one with `notifyagent dev`",
                      file=sys.stderr)  # fmt: skip
            elif e.code() == grpc.StatusCode.UNAUTHENTICATED:
                print("  set NOTIFY_TOKEN to a token from the scheduler's NOTIFY_TOKENS_FILE", file=sys.stderr)
            return 1
    print(json.dumps(shown(resp), indent=2, ensure_ascii=False))
    return 0


def token_create(a: argparse.Namespace) -> int:
    token, line = auth.new_token(a.name, a.scopes)  # ConfigError: one line, exit 2 (main)
    print(f"token: {token}")
    print(f"line:  {line}")
    print("Add the line to NOTIFY_TOKENS_FILE (then SIGHUP the scheduler); give the token to the caller as NOTIFY_TOKEN.",
          file=sys.stderr)  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        if args.command in ("dev", "scheduler", "dispatcher"):
            from .common.config import ROLE_DEFAULTS
            from .runner import run

            flags = {k: v for k, v in vars(args).items() if k not in ("command", "debug")}
            settings = load(flags, **ROLE_DEFAULTS.get(args.command, {}))
            if args.command in ("dev", "scheduler"):
                auth.check_exposure(settings)
            run(args.command, settings, flags)
            return 0
        if args.command == "token":
            return token_create(args)
        return run_client(args)
    except ConfigError as e:  # StartupError too: a port in use, a store or registry that does not answer;
        if debug:  # a bad tokens or certificate file, or a wrong NOTIFY_SECRET_KEY
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C on a client verb
        if debug:
            traceback.print_exc()
        return 130


if __name__ == "__main__":
    sys.exit(main())
