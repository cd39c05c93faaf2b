"""The phone's DNS cache core: TTL-honouring, or sticky like the article's old devices."""

from __future__ import annotations

from natsync.lab.dnscache import MAX_ENTRIES, Cache

KEY = ("eas.example.test.", 1)


def test_ttl_honouring_cache_serves_the_answer_for_its_ttl_only() -> None:
    cache = Cache()
    assert cache.store(KEY, b"old", ttl=3, now=100.0) == 3
    assert cache.lookup(KEY, 101.2) == (b"old", 1)
    assert cache.lookup(KEY, 102.5) == (b"old", 1)
    assert cache.lookup(KEY, 103.0) is None
    assert KEY not in cache.entries


def test_sticky_cache_ignores_the_ttl_and_reports_what_it_will_really_do() -> None:
    cache = Cache(sticky=20)
    assert cache.store(KEY, b"old", ttl=3, now=100.0) == 20
    assert cache.lookup(KEY, 110.0) == (b"old", 10)
    assert cache.lookup(KEY, 119.9) == (b"old", 1)
    assert cache.lookup(KEY, 120.0) is None


def test_a_zero_ttl_is_not_cached_and_the_cache_is_bounded() -> None:
    cache = Cache()
    assert cache.store(KEY, b"x", ttl=0, now=0) == 0
    assert cache.lookup(KEY, 0) is None
    for i in range(MAX_ENTRIES + 5):
        cache.store((f"n{i}.", 1), b"x", ttl=60, now=0)
    assert len(cache.entries) == MAX_ENTRIES
