"""Overlapping requests (the connection's ``concurrency``): the same records in the same order
whatever the setting, never more requests in flight than allowed, throttling honoured by all
threads together, and exchangelib's session pool kept from deadlocking under throttling."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from exchangelib import Configuration
from exchangelib.credentials import Credentials
from exchangelib.protocol import Protocol
from exchangelib.version import EXCHANGE_2016, Version

from ewssync.exchange import open_calendar
from ewssync.exchange.ews_patches import RetryPolicy
from tests.integration.test_exchange import settings_for, utc

WINDOW = (utc(2026, 11, 1), utc(2026, 12, 20))
HANG = 120  # seconds: far beyond what these reads need; past it the read is stuck for good


def many_items(sim, count: int) -> list[str]:
    """``count`` singles across the window plus a daily series (occurrences in the view)."""
    mailbox = sim.mailbox("alice@example.com")
    first = utc(2026, 11, 2, 6)
    ids = [
        mailbox.create(subject=f"Job {n:04}", start=first + timedelta(minutes=37 * n),
                       end=first + timedelta(minutes=37 * n + 30), timezone="W. Europe Standard Time")
        for n in range(count)
    ]  # fmt: skip
    mailbox.create(
        subject="Standup", start=utc(2026, 11, 2, 8), end=utc(2026, 11, 2, 8, 15),
        timezone="W. Europe Standard Time",
        recurrence={"pattern": "daily", "interval": 1, "count": 30},
    )  # fmt: skip
    return ids


def in_flight(sim) -> dict[str, int]:
    """Count the requests the simulator is serving at once (the most seen, under 'peak')."""
    seen = {"now": 0, "peak": 0}
    lock = threading.Lock()
    serve = sim.handle

    def counting(auth, body):
        with lock:
            seen["now"] += 1
            seen["peak"] = max(seen["peak"], seen["now"])
        try:
            return serve(auth, body)
        finally:
            with lock:
                seen["now"] -= 1

    sim.handle = counting
    return seen


def read_everything(settings, view_page_size: int = 1000):
    calendar = open_calendar(settings, view_page_size=view_page_size)
    index = calendar.read_index(*WINDOW)
    records, missing = calendar.fetch([entry["item_id"] for entry in index] + ["gone-id"])
    return index, records, missing


def finishes(work, seconds: float = HANG):
    """Run ``work`` in a thread; its result, or a failure if it is still stuck after ``seconds``."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still stuck after {seconds} s: a deadlock")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_the_same_records_in_the_same_order_whatever_the_concurrency(sim):
    many_items(sim, 450)
    results, requests = {}, {}
    for concurrency in (1, 4, 16):
        sim.reset_counters()
        # pages of 40: the window needs many view pages, read in parts
        results[concurrency] = read_everything(
            settings_for(sim, concurrency=concurrency), view_page_size=40
        )
        requests[concurrency] = dict(sim.request_counts)
    index, records, missing = results[1]
    assert len(index) == 480 and len(records) == 480 and missing == ["gone-id"]
    assert [entry["start"] for entry in index] == sorted(entry["start"] for entry in index)
    assert [r["item_id"] for r in records] == [entry["item_id"] for entry in index]
    assert results[4] == results[1]
    assert results[16] == results[1]
    # the parts follow from what the server holds, not from the setting
    assert requests[4] == requests[1] == requests[16]
    assert requests[1]["GetItem"] == 5  # 481 ids, 100 per request


def test_never_more_requests_in_flight_than_the_setting_allows(sim):
    many_items(sim, 900)
    sim.latency = 0.05  # every answer takes a while, so requests pile up if they can
    seen = in_flight(sim)
    read_everything(settings_for(sim, concurrency=3), view_page_size=100)
    assert 2 <= seen["peak"] <= 3  # reads overlapped, and never more than three at once
    seen["peak"] = 0
    read_everything(settings_for(sim, concurrency=1), view_page_size=100)
    assert seen["peak"] == 1


def test_throttled_reads_wait_and_then_return_everything(sim, caplog):
    many_items(sim, 800)
    expected = read_everything(settings_for(sim, concurrency=1))
    sim.inject_fault("server_busy", operation="GetItem", count=6, back_off_ms=200)
    sim.inject_fault("http503", operation="FindItem", count=1, retry_after=1)
    got = finishes(lambda: read_everything(settings_for(sim, concurrency=4), view_page_size=300))
    assert got == expected
    assert sum(throttled for _, throttled in sim.arrivals["GetItem"]) == 6
    assert any("EWS throttling" in r.getMessage() for r in caplog.records)


def test_many_threads_throttled_together_do_not_deadlock_the_session_pool(sim):
    """exchangelib 5.6's decrease_poolsize() waits for a session while holding the pool's lock,
    and may take that lock again inside (increase_poolsize): with several threads throttled
    together the read hung for good. Without ews_patches' fix this test fails (stuck)."""
    ids = many_items(sim, 1600)
    calendar = open_calendar(settings_for(sim, concurrency=8, throttle_wait_seconds=600))
    calendar.probe()
    sim.inject_fault("server_busy", operation="GetItem", count=40, back_off_ms=5)
    records, missing = finishes(lambda: calendar.fetch(ids))
    assert [r["item_id"] for r in records] == ids and missing == []


def test_lowering_the_pool_while_every_session_is_out_does_not_wait(sim):
    """The deadlock, step by step: a pool below its maximum, every session out with a thread, a
    back-off asks to lower the pool. exchangelib waited for a session under the pool's lock and
    asked for that lock again: stuck for good. Now nothing idle means nothing to close."""
    config = Configuration(
        service_endpoint=sim.url, credentials=Credentials("alice@example.com", "secret"),
        auth_type="basic", version=Version(build=EXCHANGE_2016), max_connections=3,
    )  # fmt: skip
    protocol = Protocol(config=config)
    held = [protocol.get_session() for _ in range(3)]
    protocol.release_session(held.pop())
    protocol.decrease_poolsize()  # the idle one is closed: 2 sessions, both out
    assert protocol.session_pool_size == 2
    finishes(protocol.decrease_poolsize, seconds=30)
    assert protocol.session_pool_size == 2  # nothing idle: nothing closed
    for session in held:
        protocol.release_session(session)
    protocol.close()


# --- the throttling budget with threads ---------------------------------------------------------


def test_back_offs_asked_at_once_count_once_against_the_budget():
    policy = RetryPolicy(max_wait=60, total_wait=25)
    for _ in range(4):  # four threads throttled together, each told 10 s
        policy.back_off(10)
    assert 9.9 <= policy.waited <= 10.1  # one pause of 10 s, not 40 s of waiting
    policy.back_off(15)  # a longer one moves the end of the pause by about 5 s
    assert 14.9 <= policy.waited <= 15.1
    until = policy.back_off_until
    policy.back_off(1)  # a shorter one never shortens the pause
    assert policy.back_off_until == until
    assert 14.9 <= policy.waited <= 15.1


def test_the_budget_still_ends_endless_throttling():
    policy = RetryPolicy(max_wait=60, total_wait=25)
    policy.back_off(20)
    policy.back_off_until = datetime.now() - timedelta(seconds=1)  # that pause is over
    with pytest.raises(Exception, match="throttle_wait_seconds"):
        policy.back_off(10)  # 20 + 10 > 25
