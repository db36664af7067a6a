"""Standard Webhooks request signing (https://www.standardwebhooks.com).

The signed content is ``f"{msg_id}.{timestamp}.".encode() + body`` and the
signature header is ``"v1," + base64(HMAC-SHA256(secret, content))``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def parse_secret(text: str) -> bytes:
    """Decode a signing secret given as ``whsec_<base64>`` (or bare base64)."""
    encoded = text.strip().removeprefix(SECRET_PREFIX)
    try:
        # Accept unpadded base64 as the reference implementations do.
        secret = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(
            f"signing secret is not valid base64 (expected {SECRET_PREFIX}<base64>)"
        ) from exc
    if not secret:
        raise ValueError("signing secret is empty")
    return secret


def signature(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one request."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }
