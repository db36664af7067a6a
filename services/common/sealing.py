"""Secret header values: redacted on the way out, encrypted at rest.

Values of Authorization, Proxy-Authorization, Cookie, X-Api-Key and of the
headers named in NOTIFY_SECRET_HEADERS reach the target intact but read
`<redacted>` in every API answer, log and callback. With NOTIFY_SECRET_KEY
(comma-separated Fernet keys: 32 random bytes in URL-safe base64, newest
first; older ones only decrypt) the store holds them encrypted with
cryptography's Fernet (AES-128-CBC with HMAC-SHA256, authenticated).
"""

from __future__ import annotations

import json
import re
from typing import Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .config import ConfigError

REDACTED = "<redacted>"
ALWAYS_SECRET = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")


class SecretKeyError(ConfigError):
    """Stored secrets cannot be read with the keys given: a wrong, missing or rotated-out NOTIFY_SECRET_KEY."""


def secret_names(extra_csv: str = "") -> frozenset[str]:
    """The lower-cased names whose values are secret: the four always, plus NOTIFY_SECRET_HEADERS."""
    extra = [n.strip() for n in extra_csv.split(",") if n.strip()]
    bad = [n for n in extra if not _HEADER_NAME.match(n)]
    if bad:
        raise ConfigError(f"NOTIFY_SECRET_HEADERS: {bad[0]!r} is not a header name")
    return ALWAYS_SECRET | {n.lower() for n in extra}


def redact(headers: Mapping[str, str], names: frozenset[str] = ALWAYS_SECRET) -> dict[str, str]:
    """A copy of headers with every secret value replaced by <redacted> (the same dict back if none is secret)."""
    if not any(k.lower() in names for k in headers):
        return headers if isinstance(headers, dict) else dict(headers)
    return {k: REDACTED if k.lower() in names else v for k, v in headers.items()}


class SecretBox:
    """Seals a notify's secret header values into one authenticated token and opens it again."""

    def __init__(self, keys_csv: str, names: frozenset[str] = ALWAYS_SECRET) -> None:
        keys = [k.strip() for k in keys_csv.split(",") if k.strip()]
        if not keys:
            raise ConfigError("NOTIFY_SECRET_KEY holds no key")
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except (ValueError, TypeError) as e:
            raise ConfigError(
                "NOTIFY_SECRET_KEY: each key must be 32 random bytes in URL-safe base64 "
                "(python -c 'import base64,os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')"
            ) from e
        self.names = names

    @classmethod
    def from_settings(cls, secret_key: str, secret_headers: str) -> "SecretBox | None":
        return cls(secret_key, secret_names(secret_headers)) if secret_key else None

    def seal(self, headers: Mapping[str, str]) -> tuple[dict[str, str], str]:
        """(headers without the secret ones, a token holding them; '' when none is secret)."""
        secret = {k: v for k, v in headers.items() if k.lower() in self.names}
        if not secret:
            return dict(headers), ""
        plain = {k: v for k, v in headers.items() if k.lower() not in self.names}
        return plain, self._fernet.encrypt(json.dumps(secret, separators=(",", ":")).encode()).decode()

    def open(self, token: str, where: str) -> dict[str, str]:
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise SecretKeyError(
                f"NOTIFY_SECRET_KEY cannot decrypt the secret headers of {where}: "
                "wrong key, or the key that wrote them is no longer in the list"
            ) from None


def open_sealed(box: SecretBox | None, token: str, where: str) -> dict[str, str]:
    if box is None:
        raise SecretKeyError(f"the store holds encrypted secret headers ({where}) but NOTIFY_SECRET_KEY is not set")
    return box.open(token, where)
