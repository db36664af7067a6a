"""Notify ids: 48-bit ms time, 70 random bits and a 10-bit partition, in Crockford base32, strictly increasing."""

import random

from notifyagent.common.ids import IdGenerator

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def reference(ms: int, rand: int, partition: int = 0) -> str:
    """The layout spelled out: 130 bits, 5 per character, most significant first."""
    value = (ms << 80) | ((rand & ((1 << 70) - 1)) << 10) | (partition % 1024)
    return "".join(ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))


def test_ids_encode_time_and_random_bits_in_crockford_base32():
    rnd = random.Random(11)
    for _ in range(5000):
        ms = rnd.choice([0, 1, (1 << 48) - 1, rnd.randrange(1 << 48)])
        rand = rnd.choice([0, (1 << 70) - 1, (1 << 70), rnd.randrange(1 << 81)])
        partition = rnd.choice([0, 1, 1023, 1024, rnd.randrange(5000)])
        gen = IdGenerator()
        gen._last_ms, gen._last_rand = ms, rand  # the next id in the same ms counts up from here
        assert gen.new(ms, partition=partition) == reference(ms, rand + 1, partition)


def test_ids_increase_strictly_within_and_across_milliseconds():
    gen = IdGenerator()
    made = [gen.new(ms) for ms in [5] * 100 + [6] * 100 + [4] * 10 + [7]]  # a clock stepping back counts on
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(len(i) == 26 and set(i) <= set(ALPHABET) for i in made)
    assert made[0][:10] == reference(5, 0)[:10] and made[-1][:10] == reference(7, 0)[:10]
