"""What happens after an attempt: succeeded, retry at a time, or failed for good."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .model import Notification, RetryPolicy, State

JITTER = 0.2  # a backoff is shortened by up to 20 %, so it never exceeds max_backoff


@dataclass(slots=True)  # not frozen: one is made per result, and frozen construction costs 4x; nothing changes one
class Outcome:
    """One attempt's result as the scheduler sees it."""

    status_code: int  # 0: no answer
    success: bool
    error: str
    no_answer_retryable: bool = True  # False for refused-by-guard and the like
    retry_after_s: float | None = None
    deferred: bool = False  # not sent at all (the dispatcher held it back): no attempt to count


@dataclass(frozen=True, slots=True)
class Decision:
    state: State
    due_ms: int | None
    reason: str


DELIVERED = Decision(State.SUCCEEDED, None, "delivered")  # the common outcome, made once


def backoff_s(policy: RetryPolicy, attempts_made: int, rand: float) -> float:
    """Delay before the attempt after `attempts_made` attempts (1-based), jittered by rand in [0,1)."""
    base = policy.min_backoff * policy.multiplier ** max(0, attempts_made - 1)
    return min(policy.max_backoff, base) * (1.0 - JITTER * rand)


def is_retryable_code(policy: RetryPolicy, code: int) -> bool:
    if policy.retry_codes:
        return code in policy.retry_codes
    return code in (408, 429) or 500 <= code <= 599


def body_mismatch_retried(n: Notification, outcome: Outcome) -> bool:
    """A success status whose body lacks body_contains: "resend until the correct answer",
    unless the notify says a mismatch is final."""
    s = n.spec.success
    if not s.body_contains or s.mismatch_final or outcome.success:
        return False
    code = outcome.status_code
    return code in s.status_codes if s.status_codes else 200 <= code < 300


def defer(n: Notification, outcome: Outcome, now_ms: int) -> Decision:
    """A call the dispatcher did not make: try again after its target's backoff."""
    due = now_ms + int(max(0.05, outcome.retry_after_s or 0.0) * 1000)
    if n.spec.expire_at_ms is not None and due > n.spec.expire_at_ms:
        return Decision(State.FAILED, None, f"would retry after expire_at: {outcome.error}")
    return Decision(State.RETRY_WAIT, due, outcome.error)


def decide(n: Notification, outcome: Outcome, now_ms: int, rand: float | None = None) -> Decision:
    """Decides n's next state; n.attempt_count already counts this attempt."""
    spec = n.spec
    if outcome.success or (spec.fire_and_forget and outcome.status_code):
        return DELIVERED
    if spec.fire_and_forget:
        return Decision(State.FAILED, None, f"fire-and-forget attempt got no answer: {outcome.error}")
    if outcome.status_code:
        retryable = is_retryable_code(spec.retry, outcome.status_code) or body_mismatch_retried(n, outcome)
    else:
        retryable = outcome.no_answer_retryable
    if not retryable:
        return Decision(State.FAILED, None, f"not retryable: {outcome.error}")
    if n.attempts_in_budget >= spec.retry.max_attempts:
        return Decision(State.FAILED, None, f"{n.attempts_in_budget} attempts made, the most allowed: {outcome.error}")
    delay = backoff_s(spec.retry, n.attempts_in_budget, random.random() if rand is None else rand)
    if outcome.retry_after_s is not None:
        delay = max(delay, min(outcome.retry_after_s, spec.retry.max_backoff))
    due = now_ms + int(delay * 1000)
    first = n.first_attempt_ms if n.first_attempt_ms is not None else now_ms
    if due > first + spec.retry.max_retry_duration * 1000:
        return Decision(State.FAILED, None, f"retry time ({spec.retry.max_retry_duration:.0f} s) used up: {outcome.error}")
    if spec.expire_at_ms is not None and due > spec.expire_at_ms:
        return Decision(State.FAILED, None, f"would retry after expire_at: {outcome.error}")
    return Decision(State.RETRY_WAIT, due, outcome.error)
