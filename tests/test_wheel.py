import random

from notifyagent.scheduler.engine.wheel import TimerWheel


def test_items_fire_at_their_due_time_not_before():
    wheel = TimerWheel(now_ms=1_000)
    wheel.add(1_005, "a")
    wheel.add(1_070, "b")
    assert wheel.advance(1_004) == []
    assert wheel.advance(1_005) == [(1_005, "a")]
    assert wheel.advance(1_069) == []
    assert wheel.advance(1_070) == [(1_070, "b")]
    assert len(wheel) == 0


def test_overdue_item_fires_on_next_advance():
    wheel = TimerWheel(now_ms=50_000)
    wheel.add(10, "late")
    assert wheel.next_event_ms() == 50_000
    assert wheel.advance(50_000) == [(10, "late")]


def test_random_items_fire_exactly_once_in_order_across_levels_and_overflow():
    rng = random.Random(7)
    start = 123_456_789
    wheel = TimerWheel(now_ms=start, levels=3)  # top level spans 262 s: overflow gets used
    dues = [start + rng.randrange(1, 2_000_000) for _ in range(5_000)]
    for i, due in enumerate(dues):
        wheel.add(due, i)
    seen = []
    now = start
    while len(wheel):
        step = rng.choice([1, 7, 64, 4_096, 100_000])
        now += step
        for due, i in wheel.advance(now):
            assert due <= now, "fired early"
            assert due > now - step, "fired late"
            seen.append(i)
    assert sorted(seen) == list(range(5_000))


def test_next_event_lets_an_idle_wheel_jump_without_stepping():
    wheel = TimerWheel(now_ms=0)
    wheel.add(10_000_000, "far")
    hops = 0
    now = 0
    while True:
        event = wheel.next_event_ms()
        assert event is not None
        hops += 1
        fired = wheel.advance(event)
        now = event
        if fired:
            break
    assert fired == [(10_000_000, "far")] and now == 10_000_000
    assert hops <= 8  # one cascade per level, not ten million ticks


def test_a_tag_added_with_an_item_fires_with_it_at_every_level_and_from_overflow():
    wheel = TimerWheel(now_ms=0, levels=2)  # top level spans 4 s: the last one overflows
    for due in (3, 300, 3_000, 30_000):
        wheel.add(due, f"at {due}", due * 10)
    wheel.add(5, "untagged")
    assert wheel.advance(40_000) == [
        (3, "at 3", 30), (5, "untagged"), (300, "at 300", 3_000), (3_000, "at 3000", 30_000), (30_000, "at 30000", 300_000)
    ]
