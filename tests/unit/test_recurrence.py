"""recurrence: app RRULEs -> Exchange patterns (exactly the same occurrences), and what cannot
be expressed, case by case; expansion keeps wall-clock time across DST."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ewssync.recurrence import (
    occurrence_index,
    occurrences,
    rrule_of,
    to_recurrence,
    unsupported_reason,
)

BERLIN = "Europe/Berlin"
MONDAY_0800 = datetime(2026, 11, 23, 7, tzinfo=UTC)  # 08:00 in Berlin, Monday 23 November

SUPPORTED = [
    ("FREQ=DAILY;COUNT=5", "daily", {"interval": 1, "count": 5}),
    ("RRULE:FREQ=DAILY;INTERVAL=3;UNTIL=20261231T000000Z", "daily",
     {"interval": 3, "end": date(2026, 12, 31)}),
    ("FREQ=WEEKLY;BYDAY=MO,WE,FR", "weekly", {"weekdays": ("Monday", "Wednesday", "Friday")}),
    ("FREQ=WEEKLY;INTERVAL=2", "weekly", {"interval": 2, "weekdays": ("Monday",)}),
    ("FREQ=MONTHLY;BYMONTHDAY=23;COUNT=3", "absolute_monthly", {"day_of_month": 23, "count": 3}),
    ("FREQ=MONTHLY", "absolute_monthly", {"day_of_month": 23}),
    ("FREQ=MONTHLY;BYDAY=4MO", "relative_monthly",
     {"weekdays": ("Monday",), "week_index": "Fourth"}),
    ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=4", "relative_monthly", {"week_index": "Fourth"}),
    ("FREQ=YEARLY", "absolute_yearly", {"month": 11, "day_of_month": 23}),
    ("FREQ=YEARLY;BYMONTH=11;BYDAY=4MO", "relative_yearly",
     {"month": 11, "week_index": "Fourth", "weekdays": ("Monday",)}),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "pattern", "fields"), SUPPORTED, ids=[c[0] for c in SUPPORTED])
def test_supported_rules_map_to_one_exchange_pattern(rule, pattern, fields):
    recurrence, _ = to_recurrence(rule, MONDAY_0800, BERLIN)
    assert recurrence.pattern == pattern
    assert recurrence.start == date(2026, 11, 23)
    for name, value in fields.items():
        assert getattr(recurrence, name) == value, name
    # the pattern, expanded back, gives exactly the rule's occurrences
    horizon = datetime(2028, 1, 1, tzinfo=UTC)
    assert occurrences(rrule_of(recurrence, MONDAY_0800), MONDAY_0800, BERLIN, horizon) == (
        occurrences(rule, MONDAY_0800, BERLIN, horizon)
    )


UNSUPPORTED = [
    ("FREQ=HOURLY;COUNT=3", "FREQ=HOURLY"),
    ("FREQ=DAILY;BYHOUR=7,9", "BYHOUR"),
    ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=1,3", "several BYSETPOS"),
    ("FREQ=MONTHLY;BYMONTHDAY=1,15", "several BYMONTHDAY"),
    ("FREQ=MONTHLY;BYMONTHDAY=-1", "BYMONTHDAY=-1"),
    ("FREQ=YEARLY;INTERVAL=2", "INTERVAL>1 in a YEARLY"),
    ("FREQ=WEEKLY;BYDAY=TU", "not a day the rule produces"),
    ("FREQ=MONTHLY;BYDAY=5MO", "week 5"),
    ("FREQ=DAILY;COUNT=1000", "COUNT=1000"),
    ("FREQ=DAILY\nRDATE:20261201T070000Z", "RDATE"),
    ("FREQ=WEEKLY;BYWEEKNO=3", "BYWEEKNO"),
    ("nonsense", "malformed"),
]


@pytest.mark.parametrize(("rule", "why"), UNSUPPORTED, ids=[c[0] for c in UNSUPPORTED])
def test_what_exchange_cannot_express_is_named(rule, why):
    reason = unsupported_reason(rule, MONDAY_0800, BERLIN)
    assert reason is not None and why in reason


def test_not_a_series_is_not_unsupported():
    assert unsupported_reason(None, MONDAY_0800, BERLIN) is None
    assert unsupported_reason("  ", MONDAY_0800, BERLIN) is None


def test_exdates_remove_occurrences_in_utc_local_or_date_form():
    rule = (
        "FREQ=DAILY;COUNT=5\nEXDATE:20261124T070000Z\n"
        "EXDATE;TZID=Europe/Berlin:20261125T080000\nEXDATE;VALUE=DATE:20261126"
    )
    starts = occurrences(rule, MONDAY_0800, BERLIN)
    assert [s.day for s in starts] == [23, 27]


def test_wall_clock_time_is_kept_across_dst_and_indexes_count_deleted_occurrences():
    start = datetime(2026, 10, 19, 7, tzinfo=UTC)  # 09:00 CEST, a Monday
    rule = "FREQ=WEEKLY;COUNT=3\nEXDATE:20261026T080000Z"
    assert occurrences(rule, start, BERLIN) == [
        datetime(2026, 10, 19, 7, tzinfo=UTC),
        datetime(2026, 11, 2, 8, tzinfo=UTC),  # 09:00 CET after the change on 25 October
    ]
    recurrence, _ = to_recurrence(rule, start, BERLIN)
    # EWS InstanceIndex: positions in the pattern, the deleted one still counted
    assert occurrence_index(recurrence, start, BERLIN, datetime(2026, 11, 2, 8, tzinfo=UTC)) == 3
    with pytest.raises(ValueError):
        occurrence_index(recurrence, start, BERLIN, datetime(2026, 11, 3, 8, tzinfo=UTC))
