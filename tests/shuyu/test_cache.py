"""The derived-data cache: bounded in size and age, least recently used goes first."""

from __future__ import annotations

from shuyu.cache import TtlCache


def test_values_expire_and_the_least_recently_used_goes_first() -> None:
    now = [0.0]
    cache: TtlCache[str] = TtlCache(max_items=2, ttl_s=10.0, clock=lambda: now[0])
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a is now the most recently used
    cache.put("c", "C")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
    now[0] = 10.5
    assert cache.get("a") is None and cache.get("c") is None  # too old
    cache.put("d", "D")
    cache.clear()
    assert cache.get("d") is None
