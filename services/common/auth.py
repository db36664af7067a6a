"""Who may do what: bearer tokens with scopes, checked in one place.

NOTIFY_TOKENS_FILE holds one token per line, `NAME SCOPES sha256:HEX` (`#`
starts a comment): a name for logs, comma-separated scopes, and the SHA-256 of
the token in hex; the file never holds a token itself. `authorize(header or
metadata, method)` answers the principal a call runs as, or raises
Unauthenticated / PermissionDenied. The gRPC side calls it from
AuthInterceptor; the HTTP side calls the same function.

Scopes: `client` (every NotifyService RPC), `read` (GetNotify and
ListNotifies only), `dispatcher` (DispatchService.Lease), `admin`
(everything). Health and reflection stay open. Without a tokens file every
caller is the anonymous principal with every scope.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import grpc

from .config import ConfigError, Settings, split_addr

log = logging.getLogger(__name__)

SCOPES = ("client", "read", "dispatcher", "admin")
NOTIFY_SERVICE = "/notifyagent.v1.NotifyService/"
READ_METHODS = frozenset({NOTIFY_SERVICE + "GetNotify", NOTIFY_SERVICE + "ListNotifies"})
LEASE_METHOD = "/notifyagent.v1.DispatchService/Lease"
ADMIN_SERVICE = "/notifyagent.v1.AdminService/"
METRICS = "/metrics"  # the HTTP port's /metrics, when NOTIFY_METRICS_AUTH asks for a token: read or admin
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")
MAX_FILE_BYTES = 1 << 20
MAX_TOKEN_CHARS = 512
REFUSAL_READ_S = 1.0  # how long a refused streaming call may take to send its first message
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


class AuthError(Exception):
    """A call is refused; `code` is its gRPC status, the message says why (never the token)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Unauthenticated(AuthError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AuthError):
    code = grpc.StatusCode.PERMISSION_DENIED


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a call runs as: a token's name and scopes ('' and every scope when auth is off)."""

    name: str
    scopes: frozenset[str]

    def may(self, method: str) -> bool:
        return bool(self.scopes & required_scopes(method))


ANONYMOUS = Principal("", frozenset(SCOPES))
_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("notifyagent_principal", default=ANONYMOUS)


def current() -> Principal:
    """The principal of the call being served (set by AuthInterceptor for its handler)."""
    return _current.get()


def run_as(principal: Principal) -> None:
    """Makes `principal` the caller for the rest of the call being served (the HTTP/JSON API's hook)."""
    _current.set(principal)


def required_scopes(method: str) -> frozenset[str]:
    """Any one of these scopes allows `method` (a full gRPC method name, or METRICS)."""
    if method == METRICS:
        return _READ_OR_ADMIN
    if method in READ_METHODS:
        return _READERS
    if method.startswith(NOTIFY_SERVICE):
        return _CLIENT_OR_ADMIN
    if method == LEASE_METHOD:
        return _DISPATCHER_OR_ADMIN
    return _ADMIN


_READ_OR_ADMIN = frozenset({"read", "admin"})
_READERS = frozenset({"client", "read", "admin"})
_CLIENT_OR_ADMIN = frozenset({"client", "admin"})
_DISPATCHER_OR_ADMIN = frozenset({"dispatcher", "admin"})
_ADMIN = frozenset({"admin"})


def is_open(method: str) -> bool:
    return method.startswith(OPEN_PREFIXES)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    digest: bytes


class Tokens:
    """The parsed tokens file. Lookups hash the presented token and compare it with
    every entry in constant time, so timing says nothing about which one matched."""

    def __init__(self, entries: Sequence[_Entry]) -> None:
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[_Entry, ...]:
        return self._entries

    @classmethod
    def parse(cls, text: str, source: str = "NOTIFY_TOKENS_FILE") -> "Tokens":
        entries, names, digests = [], set(), set()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            where = f"{source} line {number}"
            if len(parts) != 3:
                raise ConfigError(f"{where}: expected `NAME SCOPES sha256:HEX`, got {len(parts)} fields")
            name, scopes, hexdigest = parts
            if not _NAME.match(name):
                raise ConfigError(f"{where}: name must be 1-64 of A-Z a-z 0-9 _ . @ -, not {name!r}")
            wanted = scopes.split(",")
            unknown = [s for s in wanted if s not in SCOPES]
            if unknown or not wanted:
                raise ConfigError(f"{where}: unknown scope {', '.join(map(repr, unknown))}; scopes are {', '.join(SCOPES)}")
            m = _DIGEST.match(hexdigest.lower())
            if not m:
                raise ConfigError(f"{where}: the third field must be sha256: and 64 hex digits")
            if name in names or m.group(1) in digests:
                raise ConfigError(f"{where}: the name {name!r} or its token appears twice")
            names.add(name)
            digests.add(m.group(1))
            entries.append(_Entry(Principal(name, frozenset(wanted)), bytes.fromhex(m.group(1))))
        return cls(entries)

    @classmethod
    def read(cls, path: str) -> "Tokens":
        try:
            p = Path(path)
            if p.stat().st_size > MAX_FILE_BYTES:
                raise ConfigError(f"NOTIFY_TOKENS_FILE {path} is larger than {MAX_FILE_BYTES} bytes")
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read NOTIFY_TOKENS_FILE {path}: {e}") from e
        return cls.parse(text, f"NOTIFY_TOKENS_FILE {path}")

    def lookup(self, token: str) -> Principal | None:
        presented = hashlib.sha256(token.encode()).digest()
        found = None
        for entry in self._entries:  # no early exit: every entry is compared
            if hmac.compare_digest(presented, entry.digest):
                found = entry.principal
        return found


def bearer(metadata_or_header: str | Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token in `authorization: Bearer TOKEN`, from a header value or gRPC metadata; '' if none."""
    if metadata_or_header is None:
        return ""
    if isinstance(metadata_or_header, str):
        value = metadata_or_header
    else:
        value = next((v for k, v in metadata_or_header if k.lower() == "authorization"), "")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


class Authenticator:
    """Holds the tokens in force; `reload()` (SIGHUP) reads the file again and keeps the
    old tokens when the new file is bad."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self._tokens: Tokens | None = Tokens.read(path) if path else None
        self._internal: list[_Entry] = []  # tokens of this process's own parts; kept across reloads

    def internal(self, name: str, scopes: frozenset[str]) -> str:
        """A fresh token for a part of this process (dev's own dispatcher); '' when auth is off."""
        if self._tokens is None:
            return ""
        token = secrets.token_urlsafe(32)
        self._internal.append(_Entry(Principal(name, scopes), hashlib.sha256(token.encode()).digest()))
        self._tokens = Tokens([*self._tokens.entries, self._internal[-1]])
        return token

    @property
    def enabled(self) -> bool:
        return self._tokens is not None

    def reload(self) -> str | None:
        """Reads the tokens file again; returns what happened, for the log."""
        if not self.path:
            return None
        try:
            tokens = Tokens.read(self.path)
        except ConfigError as e:
            log.error("SIGHUP: keeping the %d tokens in force: %s", len(self._tokens or ()), e)
            return None
        if self._tokens is not None and self._tokens.entries == (*tokens.entries, *self._internal):
            return None
        self._tokens = Tokens([*tokens.entries, *self._internal])
        return f"tokens file {self.path} read again: {len(tokens)} tokens"

    def authorize(self, metadata_or_header, method: str) -> Principal:
        """The principal `method` runs as, or Unauthenticated / PermissionDenied."""
        if self._tokens is None or is_open(method):
            return ANONYMOUS
        token = bearer(metadata_or_header)
        if not token:
            raise Unauthenticated("this server requires `authorization: Bearer TOKEN` (see NOTIFY_TOKEN)")
        principal = self._tokens.lookup(token) if len(token) <= MAX_TOKEN_CHARS else None
        if principal is None:
            raise Unauthenticated("unknown token")
        if not principal.may(method):
            raise PermissionDenied(
                f"token {principal.name!r} ({','.join(sorted(principal.scopes))}) may not call {method}; "
                f"it needs one of {', '.join(sorted(required_scopes(method)))}"
            )
        return principal


def authorize(authenticator: Authenticator, metadata_or_header, method: str) -> Principal:
    """The one check both transports make (see Authenticator.authorize)."""
    return authenticator.authorize(metadata_or_header, method)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates and authorizes every call before its handler runs; the handler
    sees the caller as `auth.current()`.

    Every call is checked (its token hashed and compared, its scopes against the method);
    what is kept is only the handler that runs as a principal, built once per method and
    principal rather than per call (a principal is its name and scopes: a reloaded token
    with other scopes is another principal, a revoked one is refused before this)."""

    MAX_WRAPPED = 4096  # method x principal pairs kept; beyond that the cache starts again

    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator
        self._wrapped: dict[tuple[str, Principal], tuple] = {}  # -> (the handler, it run as the principal)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        method = details.method
        if handler is None or not self._auth.enabled or is_open(method):
            return handler
        try:
            principal = self._auth.authorize(details.invocation_metadata, method)
        except AuthError as e:
            log.warning("refused %s: %s: %s", method, e.code.name, e)
            return _refusing(handler, e)
        if method.startswith(ADMIN_SERVICE) and not method.endswith("/GetStatus"):
            log.info("%s by token %s", method, principal.name)  # admin changes are audited
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s by token %s", method, principal.name)
        key = (method, principal)
        kept = self._wrapped.get(key)
        if kept is None or kept[0] is not handler:
            if len(self._wrapped) >= self.MAX_WRAPPED:
                self._wrapped.clear()
            kept = self._wrapped[key] = (handler, _as(handler, principal))
        return kept[1]


def _kind(handler) -> str:
    return ("stream" if handler.request_streaming else "unary") + "_" + ("stream" if handler.response_streaming else "unary")


def _rebuild(handler, behavior):
    make = getattr(grpc, f"{_kind(handler)}_rpc_method_handler")
    return make(behavior, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


def _refusing(handler, error: AuthError):
    async def first_message(request) -> None:
        # A streaming caller's first message is taken before the refusal: a client still
        # sending it when the status arrives sees INTERNAL instead of the real code.
        if handler.request_streaming:
            try:
                await asyncio.wait_for(anext(aiter(request)), REFUSAL_READ_S)
            except Exception:  # ended, broken or silent: the refusal goes out all the same
                pass

    async def refuse(request, context):
        await first_message(request)
        await context.abort(error.code, str(error))

    async def refuse_stream(request, context):
        await first_message(request)
        await context.abort(error.code, str(error))
        yield  # never reached: makes this an async generator like the handler it stands for

    return _rebuild(handler, refuse_stream if handler.response_streaming else refuse)


def _as(handler, principal: Principal):
    inner = getattr(handler, _kind(handler))

    async def unary(request, context):
        _current.set(principal)  # each call runs in its own task and context
        return await inner(request, context)

    async def streaming(request, context):
        _current.set(principal)
        async for response in inner(request, context):
            yield response

    return _rebuild(handler, streaming if handler.response_streaming else unary)


# --- clients and the command line -----------------------------------------


def call_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Metadata for a client call that carries NOTIFY_TOKEN (empty without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def new_token(name: str, scopes: str) -> tuple[str, str]:
    """A fresh random token and its tokens-file line."""
    if not _NAME.match(name):
        raise ConfigError(f"token name must be 1-64 of A-Z a-z 0-9 _ . @ -, not {name!r}")
    line_scopes = [s.strip() for s in scopes.split(",") if s.strip()]
    Tokens.parse(f"{name} {','.join(line_scopes)} sha256:{'0' * 64}", "token create")  # checks name and scopes
    token = secrets.token_urlsafe(32)
    return token, f"{name} {','.join(line_scopes)} sha256:{digest(token)}"


# --- the safe default -------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Without a tokens file, `scheduler` and `dev` listen on loopback only, unless NOTIFY_INSECURE=true."""
    if settings.tokens_file or settings.insecure:
        return
    for value, setting in ((settings.grpc_addr, "NOTIFY_GRPC_ADDR"), (settings.http_addr, "NOTIFY_HTTP_ADDR")):
        if value and not is_loopback(split_addr(value, setting)[0]):
            raise ConfigError(
                f"{setting}={value} is not a loopback address and no NOTIFY_TOKENS_FILE is set: anyone who can reach "
                "it could create, read and lease notifies; set NOTIFY_TOKENS_FILE (see `notifyagent token create`) "
                "or NOTIFY_INSECURE=true"
            )
