"""The scheduler's exceptions; the transport maps each to one gRPC status code."""

from __future__ import annotations


class NotifyError(Exception):
    """Base of every error the scheduler reports to callers."""


MAX_VIOLATIONS = 20
MAX_FIELD = 200
MAX_DESCRIPTION = 300


class InvalidArgument(NotifyError):
    """Bad input; nothing was changed. Carries (field, description) violations.

    Capped, so an error never grows with the input it refuses: at most 20
    violations of at most 200 + 300 characters (a few KB in all, well under
    gRPC's 16 KB trailer limit)."""

    def __init__(self, violations: list[tuple[str, str]]):
        kept = [(_cut(f, MAX_FIELD), _cut(d, MAX_DESCRIPTION)) for f, d in violations[:MAX_VIOLATIONS]]
        if len(violations) > MAX_VIOLATIONS:
            kept.append(("", f"and {len(violations) - MAX_VIOLATIONS} more violations"))
        self.violations = kept
        super().__init__(_cut("; ".join(f"{f}: {d}" for f, d in kept[:3]) + ("; ..." if len(kept) > 3 else ""), 1000))


class NotFound(NotifyError):
    pass


class FailedPrecondition(NotifyError):
    pass


class Unavailable(NotifyError):
    """The scheduler is shutting down or its store is unreachable; retry elsewhere."""


class Fenced(Unavailable):
    """A write for partitions this scheduler no longer owns (or whose epoch moved on): refused,
    nothing committed. Its owner now is another scheduler; the caller may retry there."""

    def __init__(self, partitions: list[int]):
        self.partitions = partitions
        super().__init__(f"partitions {partitions} are no longer owned by this scheduler; nothing was written")


class NotOwner(NotifyError):
    """The operation belongs to a partition another scheduler owns: the transport forwards it."""

    def __init__(self, partition: int):
        self.partition = partition
        super().__init__(f"partition {partition} is owned by another scheduler")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
