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
