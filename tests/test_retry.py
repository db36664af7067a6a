"""The retry decision: defaults, backoff growth and jitter, what is retried, Retry-After, limits."""

from dataclasses import replace

from notifyagent.scheduler.engine.model import Notification, RetryPolicy, State
from notifyagent.scheduler.engine.retry import Outcome, backoff_s, decide
from support import spec

NOW = 1_000_000


def after(attempts: int, **spec_fields) -> Notification:
    """A notify that has just had `attempts` attempts, the first at NOW."""
    return Notification(id="N", spec=spec(**spec_fields), state=State.DELIVERING, create_ms=NOW,
                        attempt_count=attempts, first_attempt_ms=NOW)  # fmt: skip


def test_defaults_back_off_from_5_s_doubling_to_2_h_over_about_a_day():
    p = RetryPolicy()
    assert (p.max_attempts, p.min_backoff, p.max_backoff, p.multiplier, p.max_retry_duration) == (20, 5, 7200, 2, 86400)
    assert [backoff_s(p, n, 0.0) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff_s(p, 15, 0.0) == 7200
    total = sum(backoff_s(p, n, 0.0) for n in range(1, 20))
    assert 16 * 3600 < total < 24 * 3600


def test_jitter_only_shortens_a_backoff_by_at_most_a_fifth():
    p = RetryPolicy()
    assert backoff_s(p, 3, 0.999) >= 20 * 0.8 and backoff_s(p, 3, 0.999) < 20
    assert backoff_s(p, 30, 0.5) <= p.max_backoff


def test_server_errors_timeouts_and_429_are_retried_other_answers_are_not():
    for code in (408, 429, 500, 502, 503, 599):
        assert decide(after(1), Outcome(code, False, f"HTTP {code}"), NOW, rand=0).state == State.RETRY_WAIT
    assert decide(after(1), Outcome(0, False, "connect failed"), NOW, rand=0).state == State.RETRY_WAIT
    for code in (400, 401, 404, 410, 301):
        assert decide(after(1), Outcome(code, False, f"HTTP {code}"), NOW, rand=0).state == State.FAILED
    refused = Outcome(0, False, "blocked: 10.0.0.1 is private", no_answer_retryable=False)
    assert decide(after(1), refused, NOW, rand=0).state == State.FAILED


def test_explicit_retry_codes_replace_the_default_set():
    n = after(1, retry=RetryPolicy(retry_codes=(404,)))
    assert decide(n, Outcome(404, False, "HTTP 404"), NOW, rand=0).state == State.RETRY_WAIT
    assert decide(n, Outcome(500, False, "HTTP 500"), NOW, rand=0).state == State.FAILED


def test_retry_after_is_honoured_when_longer_than_the_backoff_and_capped_by_max_backoff():
    d = decide(after(1), Outcome(503, False, "HTTP 503", retry_after_s=60), NOW, rand=0)
    assert d.due_ms == NOW + 60_000
    d = decide(after(1), Outcome(503, False, "HTTP 503", retry_after_s=1), NOW, rand=0)
    assert d.due_ms == NOW + 5_000
    capped = after(1, retry=RetryPolicy(max_backoff=30))
    assert decide(capped, Outcome(503, False, "HTTP 503", retry_after_s=3600), NOW, rand=0).due_ms == NOW + 30_000


def test_attempts_retry_time_and_expire_at_end_the_retries():
    assert decide(after(20), Outcome(500, False, "HTTP 500"), NOW, rand=0).state == State.FAILED
    short = after(1, retry=RetryPolicy(max_retry_duration=3))
    assert "retry time" in decide(short, Outcome(500, False, "HTTP 500"), NOW, rand=0).reason
    expiring = after(1, expire_at_ms=NOW + 1_000)
    assert "expire_at" in decide(expiring, Outcome(500, False, "HTTP 500"), NOW, rand=0).reason


def test_retry_notify_budget_counts_only_attempts_since_it():
    n = replace(after(25), budget_base=20)
    assert decide(n, Outcome(500, False, "HTTP 500"), NOW, rand=0).state == State.RETRY_WAIT


def test_fire_and_forget_counts_any_answer_and_never_retries():
    ff = after(1, fire_and_forget=True)
    assert decide(ff, Outcome(500, False, "HTTP 500"), NOW).state == State.SUCCEEDED
    assert decide(ff, Outcome(0, False, "timed out"), NOW).state == State.FAILED
