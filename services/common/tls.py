"""TLS and mTLS for every port and client of the project, from NOTIFY_TLS_*.

Servers: NOTIFY_TLS_CERT and NOTIFY_TLS_KEY make the gRPC and HTTP ports TLS;
NOTIFY_TLS_CLIENT_CA also requires client certificates signed by it. The
files are read again on SIGHUP (`ServerTls.reload`) into new contexts that
replace the old ones for the next connections: gRPC's through
`dynamic_ssl_server_credentials`, the HTTP port's through the context it
listens with; a client CA dropped from the file is trusted no more, and a
bad file keeps the old ones.

Clients: NOTIFY_TLS_CA turns TLS on and is what they verify the server
with; under mTLS they present NOTIFY_TLS_CERT/KEY. Each connection reads
the files anew, so a client picks up renewed files on its next connect.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from .config import ConfigError, Settings

log = logging.getLogger(__name__)
MAX_PEM_BYTES = 1 << 20


def _read(path: str, setting: str) -> bytes:
    try:
        p = Path(path)
        if p.stat().st_size > MAX_PEM_BYTES:
            raise ConfigError(f"{setting} {path} is larger than {MAX_PEM_BYTES} bytes")
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {setting} {path}: {e.strerror or e}") from e
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{setting} {path} is not PEM (no -----BEGIN line)")
    return data


@dataclass(frozen=True)
class _Pair:
    cert: bytes
    key: bytes
    client_ca: bytes | None


class _LiveContext(ssl.SSLContext):
    """What the HTTP port listens with: every new connection is set up by the context in
    force (`current`), which a reload replaces whole. Adding to a context in use would
    keep trusting what the new files dropped, and its session cache would let an old
    client resume without its certificate being checked again."""

    current: ssl.SSLContext

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        return self.current.wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def wrap_socket(self, sock, *args, **kwargs):
        return self.current.wrap_socket(sock, *args, **kwargs)


class ServerTls:
    """The server side: certificate, key and (mTLS) client CA, reloadable."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()  # the gRPC fetcher runs on gRPC's threads
        self._pair, self._http = self._load()
        self._generation = 1
        self._served = 0  # the generation gRPC has
        self._live: _LiveContext | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "ServerTls | None":
        return cls(settings) if settings.tls_cert else None

    @property
    def mutual(self) -> bool:
        return bool(self._settings.tls_client_ca)

    def _load(self) -> tuple[_Pair, ssl.SSLContext]:
        """Reads the files and builds a fresh HTTP context from them (which checks that
        certificate and key belong together and that the client CA is one)."""
        s = self._settings
        pair = _Pair(
            _read(s.tls_cert, "NOTIFY_TLS_CERT"), _read(s.tls_key, "NOTIFY_TLS_KEY"),
            _read(s.tls_client_ca, "NOTIFY_TLS_CLIENT_CA") if s.tls_client_ca else None,
        )  # fmt: skip
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(s.tls_cert, s.tls_key)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"NOTIFY_TLS_CERT {s.tls_cert} and NOTIFY_TLS_KEY {s.tls_key} do not load: {e}") from e
        if pair.client_ca is not None:
            try:
                ctx.load_verify_locations(cadata=pair.client_ca.decode("latin-1"))
            except (ssl.SSLError, ValueError) as e:
                raise ConfigError(f"NOTIFY_TLS_CLIENT_CA {s.tls_client_ca} does not load: {e}") from e
            ctx.verify_mode = ssl.CERT_REQUIRED
        return pair, ctx

    def reload(self) -> str | None:
        """Reads the files again (SIGHUP); keeps the old ones if the new ones are bad.
        New connections on both ports take the new files alone; open ones keep theirs."""
        try:
            pair, http = self._load()
        except ConfigError as e:
            log.error("SIGHUP: keeping the TLS certificate in force: %s", e)
            return None
        with self._lock:
            if pair == self._pair:
                return None
            self._pair, self._http = pair, http
            self._generation += 1
        if self._live is not None:
            self._live.current = http
        return f"TLS certificate {self._settings.tls_cert} read again"

    # --- gRPC ---------------------------------------------------------------

    def _grpc_config(self, pair: _Pair):
        return grpc.ssl_server_certificate_configuration([(pair.key, pair.cert)], root_certificates=pair.client_ca)

    def _fetch(self):
        with self._lock:
            if self._served == self._generation:
                return None  # unchanged: gRPC keeps what it has
            self._served = self._generation
            return self._grpc_config(self._pair)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """gRPC builds a new server context from each configuration the fetcher returns,
        so a client CA dropped from the file is no longer trusted after a reload."""
        with self._lock:
            self._served = self._generation
            initial = self._grpc_config(self._pair)
        return grpc.dynamic_ssl_server_credentials(initial, self._fetch, require_client_authentication=self.mutual)

    # --- HTTP ---------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """The context to listen with; it hands each new connection to the context in force."""
        if self._live is None:
            self._live = _LiveContext(ssl.PROTOCOL_TLS_SERVER)
            self._live.current = self._http
        return self._live


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """Credentials for a client of the scheduler; None means plaintext (no NOTIFY_TLS_CA)."""
    return client_credentials(settings.tls_ca, settings.tls_cert, settings.tls_key)


def client_credentials(ca: str, cert: str = "", key: str = "") -> grpc.ChannelCredentials | None:
    if not ca:
        return None
    root = _read(ca, "NOTIFY_TLS_CA")
    if cert and key:
        return grpc.ssl_channel_credentials(root, _read(key, "NOTIFY_TLS_KEY"), _read(cert, "NOTIFY_TLS_CERT"))
    return grpc.ssl_channel_credentials(root)


def aio_channel(addr: str, credentials: grpc.ChannelCredentials | None, options=()) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(addr, options=options)
    return grpc.aio.secure_channel(addr, credentials, options=options)
