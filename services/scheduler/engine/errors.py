"""The scheduler's exceptions; the transport maps each to one gRPC status code."""

from __future__ import annotations


class NotifyError(Exception):
    """Base of every error the scheduler reports to callers."""


class InvalidArgument(NotifyError):
    """Bad input; nothing was changed. Carries (field, description) violations."""

    def __init__(self, violations: list[tuple[str, str]]):
        self.violations = violations
        super().__init__("; ".join(f"{f}: {d}" for f, d in violations))


class NotFound(NotifyError):
    pass


class FailedPrecondition(NotifyError):
    pass


class Unavailable(NotifyError):
    """The scheduler is shutting down or its store is unreachable; retry elsewhere."""
