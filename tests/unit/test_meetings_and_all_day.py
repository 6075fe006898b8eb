"""Pure rules: which meetings sync and how they show; all-day dates from what the wire says."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ewssync.timezones import all_day_dates, display_name_offset
from ewssync.transform import apply_meeting_rules, meeting_free_busy, meeting_skip_reason

H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("cancelled", "response", "skip_declined", "reason"),
    [
        (True, "Accept", False, "cancelled"),
        (True, "Decline", True, "cancelled"),
        (False, "Decline", False, None),
        (False, "Decline", True, "declined"),
        (False, "Tentative", True, None),
        (False, "Organizer", True, None),
        (False, None, True, None),  # a plain appointment
        (None, None, False, None),
    ],
)
def test_meeting_skip_reason(cancelled, response, skip_declined, reason):
    assert meeting_skip_reason(cancelled, response, skip_declined=skip_declined) == reason


@pytest.mark.parametrize(
    ("free_busy", "response", "expected"),
    [
        ("Busy", "Tentative", "Tentative"),
        ("Free", "Tentative", "Tentative"),
        ("Busy", "Accept", "Busy"),
        ("Free", "Decline", "Free"),
        ("OOF", None, "OOF"),
    ],
)
def test_meeting_free_busy(free_busy, response, expected):
    assert meeting_free_busy(free_busy, response) == expected


def test_apply_meeting_rules_keeps_order_and_names_what_it_left_out():
    records = [
        {"item_id": "a", "legacy_free_busy": "Busy", "my_response": "Tentative"},
        {"item_id": "b", "is_cancelled": True},
        {"item_id": "c", "legacy_free_busy": "Free", "my_response": "Decline"},
        {"item_id": "d", "legacy_free_busy": "Busy"},
    ]
    kept, skipped = apply_meeting_rules(records, skip_declined=True)
    assert [r["item_id"] for r in kept] == ["a", "d"]
    assert kept[0]["legacy_free_busy"] == "Tentative"
    assert records[0]["legacy_free_busy"] == "Busy"  # the input is not changed
    assert skipped == {"b": "cancelled", "c": "declined"}


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "offsets", "preferred", "expected"),
    [
        # the definition's periods say -5/-4: midnight at -5 -> the US date, whatever preferred
        (utc(2026, 11, 26, 5), utc(2026, 11, 27, 5), [-5 * H, -4 * H], -8 * H,
         (date(2026, 11, 26), date(2026, 11, 26))),
        # nothing known: +9 makes 15:00Z a midnight (-15 h is no zone)
        (utc(2026, 11, 25, 15), utc(2026, 11, 27, 15), [], -8 * H,
         (date(2026, 11, 26), date(2026, 11, 27))),
        # nothing known, 10:00Z is midnight at -10 and at +14: the one nearer preferred
        (utc(2026, 11, 25, 10), utc(2026, 11, 26, 10), [], -8 * H,
         (date(2026, 11, 25), date(2026, 11, 25))),
        (utc(2026, 11, 25, 10), utc(2026, 11, 26, 10), [], 12 * H,
         (date(2026, 11, 26), date(2026, 11, 26))),
        # across a DST change: start at +1, end at +2 (each end finds its own offset)
        (utc(2026, 3, 27, 23), utc(2026, 3, 30, 22), [H, 2 * H], H,
         (date(2026, 3, 28), date(2026, 3, 30))),
        # a zero-length "all-day" item is not repaired here: it ends before it starts
        (utc(2026, 5, 1, 22), utc(2026, 5, 1, 22), [2 * H], 0 * H,
         (date(2026, 5, 2), date(2026, 5, 1))),
    ],
)  # fmt: skip
def test_all_day_dates(start, end, offsets, preferred, expected):
    assert all_day_dates(start, end, offsets, offsets, preferred) == expected


@given(
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2060, 12, 31)),
    days=st.integers(min_value=1, max_value=30),
    quarter_hours=st.integers(min_value=-48, max_value=56),
    preferred_hours=st.integers(min_value=-12, max_value=14),
)
def test_an_all_day_item_keeps_its_local_dates_when_its_offset_is_among_the_candidates(
    day, days, quarter_hours, preferred_hours
):
    offset = timedelta(minutes=15 * quarter_hours)
    start = datetime.combine(day, datetime.min.time(), UTC) - offset
    end = start + timedelta(days=days)
    got = all_day_dates(start, end, [offset], [offset], preferred_hours * H)
    assert got == (day, day + timedelta(days=days - 1))


@pytest.mark.parametrize(
    ("name", "offset"),
    [
        ("(UTC-05:00) Eastern Time (US & Canada)", -5 * H),
        ("(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi", timedelta(hours=5, minutes=30)),
        ("(UTC) Coordinated Universal Time", timedelta(0)),
        ("Customized Time Zone", None),
        (None, None),
    ],
)
def test_display_name_offset(name, offset):
    assert display_name_offset(name) == offset
