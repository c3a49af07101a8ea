"""Token buckets shared through the database (core.platform.buckets): all or nothing, and
never more tokens than the bucket holds, whatever the number of takers at once."""

from __future__ import annotations

import threading

from core.platform import buckets
from core.platform.db import make_engine

# Rates so slow that no token comes back while a test runs: counts are exact.
SLOW = 0.001


def test_a_bucket_gives_its_burst_then_says_how_long_to_wait(engine):
    bucket = buckets.Bucket("t:burst", rate=0.05, burst=3)  # a token every 20 s
    assert [buckets.take(engine, [bucket]).ok for _ in range(3)] == [True, True, True]
    refused = buckets.take(engine, [bucket])
    assert not refused.ok and refused.short == "t:burst"
    assert 0 < refused.wait <= 20.0  # the next token at most 20 s away


def test_a_short_bucket_takes_nothing_from_the_others(engine):
    bot = buckets.Bucket("t:bot", rate=SLOW, burst=1)
    chat_a, chat_b = buckets.Bucket("t:chat:a", SLOW, 2), buckets.Bucket("t:chat:b", SLOW, 2)
    assert buckets.take(engine, [chat_a, bot]).ok
    refused = buckets.take(engine, [chat_b, bot])
    assert not refused.ok and refused.short == "t:bot"
    # chat b still holds both its tokens: the refused take gave its one back
    assert buckets.take(engine, [chat_b]).ok and buckets.take(engine, [chat_b]).ok
    assert not buckets.take(engine, [chat_b]).ok


def test_takers_at_once_never_get_more_than_the_bucket_holds(engine):
    """16 threads on their own connections race for 25 tokens (no refill to speak of)."""
    engines = [make_engine(engine.url.render_as_string(hide_password=False)) for _ in range(4)]
    bucket = buckets.Bucket("t:race", rate=SLOW, burst=25)
    taken: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def taker(n: int) -> None:
        start.wait()
        for _ in range(10):
            ok = buckets.take(engines[n % 4], [buckets.Bucket(f"t:race:chat{n}", SLOW, 100), bucket]).ok
            with lock:
                taken.append(ok)

    threads = [threading.Thread(target=taker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert len(taken) == 160 and sum(taken) == 25


def test_idle_buckets_are_forgotten(engine):
    buckets.take(engine, [buckets.Bucket("t:old:1", 1.0, 1)])
    assert buckets.forget(engine, "t:old:", older_than_s=-1.0) == 1
    assert buckets.forget(engine, "t:old:", older_than_s=-1.0) == 0
