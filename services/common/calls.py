"""What an outgoing HTTP call may be, for every service: its methods and default timeout."""

from __future__ import annotations

# notifyagent.v1.HttpMethod numbers these from 1 in this order (HTTP_METHOD_GET = 1 ... HEAD = 6).
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
METHOD_BY_NUMBER = {i + 1: m for i, m in enumerate(METHODS)}
NUMBER_BY_METHOD = {m: i for i, m in METHOD_BY_NUMBER.items()}
DEFAULT_METHOD = "POST"  # HTTP_METHOD_UNSPECIFIED
DEFAULT_TIMEOUT_S = 30.0  # an attempt's timeout when the notify sets none
