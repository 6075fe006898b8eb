"""Writing through exchangelib to the simulator: recurring CreateItem (every pattern, every end),
UpdateItem with change-key checks, edits of one occurrence, paged FindItem without a view."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import requests
from exchangelib import (
    BASIC,
    DELEGATE,
    Account,
    CalendarItem,
    Configuration,
    Credentials,
    EWSDateTime,
    EWSTimeZone,
    Version,
)
from exchangelib.errors import (
    ErrorIrresolvableConflict,
    MalformedResponseError,
    SOAPError,
)
from exchangelib.fields import FIRST, LAST, MONDAY, SECOND, THURSDAY, TUESDAY
from exchangelib.recurrence import (
    AbsoluteMonthlyPattern,
    AbsoluteYearlyPattern,
    DailyPattern,
    EndDatePattern,
    NoEndPattern,
    NumberedPattern,
    Recurrence,
    RelativeMonthlyPattern,
    RelativeYearlyPattern,
    WeeklyPattern,
)
from exchangelib.version import EXCHANGE_2007_SP1, EXCHANGE_2016

from tests.ewssim import EwsSimulator

BERLIN = EWSTimeZone("Europe/Berlin")


@pytest.fixture(params=["Exchange2016", "Exchange2007_SP1"])
def account(request):
    import ewssync.exchange.ews_patches  # noqa: F401 - installs the Exchange 2007 MeetingTimeZone field

    sim = EwsSimulator(dialect=request.param)
    sim.add_mailbox("alice@example.com", password="secret")
    sim.start()
    build = EXCHANGE_2016 if request.param == "Exchange2016" else EXCHANGE_2007_SP1
    config = Configuration(
        service_endpoint=sim.url, credentials=Credentials("alice@example.com", "secret"),
        auth_type=BASIC, version=Version(build=build),
    )  # fmt: skip
    yield Account("alice@example.com", config=config, autodiscover=False, access_type=DELEGATE,
                  default_timezone=BERLIN), sim  # fmt: skip
    sim.stop()


def local(y: int, m: int, d: int, h: int = 9) -> EWSDateTime:
    return EWSDateTime(y, m, d, h, tzinfo=BERLIN)


def save_standup(account) -> CalendarItem:
    """A daily series of three, 23-25 Nov 2026 09:00-10:00 Berlin, created through exchangelib."""
    series = CalendarItem(
        account=account, folder=account.calendar, subject="Standup",
        start=local(2026, 11, 23), end=local(2026, 11, 23, 10),
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=date(2026, 11, 23), number=3),
    )  # fmt: skip
    series.save(send_meeting_invitations="SendToNone")
    return series


def view_days(account, start: EWSDateTime, end: EWSDateTime) -> list[date]:
    items = account.calendar.view(start=start, end=end, max_items=1000).only("start")
    return [item.start.astimezone(BERLIN).date() for item in items]


@pytest.mark.parametrize(
    ("pattern", "boundary", "expected"),
    [
        (
            DailyPattern(interval=3),
            NumberedPattern(start=date(2026, 11, 2), number=4),
            [date(2026, 11, 2), date(2026, 11, 5), date(2026, 11, 8), date(2026, 11, 11)],
        ),
        (
            WeeklyPattern(interval=1, weekdays=[MONDAY, THURSDAY]),
            EndDatePattern(start=date(2026, 11, 2), end=date(2026, 11, 13)),
            [date(2026, 11, 2), date(2026, 11, 5), date(2026, 11, 9), date(2026, 11, 12)],
        ),
        (
            AbsoluteMonthlyPattern(interval=1, day_of_month=31),
            NumberedPattern(start=date(2026, 10, 31), number=3),
            [date(2026, 10, 31), date(2026, 12, 31), date(2027, 1, 31)],
        ),
        (
            RelativeMonthlyPattern(interval=1, weekday=TUESDAY, week_number=SECOND),
            NumberedPattern(start=date(2026, 11, 1), number=3),
            [date(2026, 11, 10), date(2026, 12, 8), date(2027, 1, 12)],
        ),
        (
            RelativeMonthlyPattern(interval=2, weekday=MONDAY, week_number=LAST),
            NumberedPattern(start=date(2026, 11, 1), number=2),
            [date(2026, 11, 30), date(2027, 1, 25)],
        ),
        (
            AbsoluteYearlyPattern(day_of_month=24, month=12),
            NumberedPattern(start=date(2026, 1, 1), number=2),
            [date(2026, 12, 24), date(2027, 12, 24)],
        ),
        (
            RelativeYearlyPattern(weekday=THURSDAY, week_number=FIRST, month=11),
            NoEndPattern(start=date(2026, 1, 1)),
            [date(2026, 11, 5), date(2027, 11, 4)],
        ),
    ],
)
def test_recurring_series_created_through_exchangelib_expand_as_outlook_would(
    account, pattern, boundary, expected
):
    account, sim = account
    first = expected[0]
    item = CalendarItem(
        account=account, folder=account.calendar, subject="Series",
        start=local(first.year, first.month, first.day), end=local(first.year, first.month, first.day, 10),
        recurrence=Recurrence(pattern=pattern, boundary=boundary),
    )  # fmt: skip
    item.save(send_meeting_invitations="SendToNone")
    assert view_days(account, local(2026, 1, 1, 0), local(2027, 12, 31, 0)) == expected
    assert sim.request_counts["CreateItem"] == 1


def test_update_item_sets_and_deletes_fields_and_refuses_a_stale_change_key(account):
    account, sim = account
    item = CalendarItem(account=account, folder=account.calendar, subject="Visit",
                        location="Hauptstr. 1", start=local(2026, 11, 26), end=local(2026, 11, 26, 10))  # fmt: skip
    item.save(send_meeting_invitations="SendToNone")
    item.subject, item.location = "Visit (moved)", None
    item.start, item.end = local(2026, 11, 27), local(2026, 11, 27, 10)
    item.save(update_fields=["subject", "location", "start", "end"])
    stored = sim.mailbox("alice@example.com").get(item.id)
    assert (stored.subject, stored.location) == ("Visit (moved)", "")
    assert stored.start == datetime(2026, 11, 27, 8, tzinfo=UTC)

    # Someone edits it in Outlook; our copy's change key is now stale.
    sim.mailbox("alice@example.com").update(item.id, subject="Edited in Outlook")
    item.subject = "Our edit"
    with pytest.raises(ErrorIrresolvableConflict):
        item.save(update_fields=["subject"])
    assert sim.mailbox("alice@example.com").get(item.id).subject == "Edited in Outlook"


def test_editing_one_occurrence_makes_it_an_exception(account):
    account, sim = account
    save_standup(account)
    occurrences = list(
        account.calendar.view(start=local(2026, 11, 23, 0), end=local(2026, 11, 26, 0))
    )
    second = occurrences[1]
    second.subject = "Standup (long)"
    second.save(update_fields=["subject"])
    seen = list(account.calendar.view(start=local(2026, 11, 23, 0), end=local(2026, 11, 26, 0)))
    assert [(i.subject, i.type) for i in seen] == [
        ("Standup", "Occurrence"),
        ("Standup (long)", "Exception"),
        ("Standup", "Occurrence"),
    ]


def test_find_item_without_a_view_pages_through_masters_and_singles(account):
    account, sim = account
    sim.max_view_items = 7
    mailbox = sim.mailbox("alice@example.com")
    for day in range(1, 21):
        start = datetime(2026, 11, day, 8, tzinfo=UTC)
        mailbox.create(subject=f"Item {day}", start=start, end=start.replace(hour=9))
    subjects = [item.subject for item in account.calendar.all().only("subject")]
    assert sorted(subjects) == sorted(f"Item {day}" for day in range(1, 21))
    assert sim.request_counts["FindItem"] >= 3  # 20 items in pages of at most 7


def test_get_item_answers_in_the_body_type_asked_for(account):
    account, sim = account
    start = datetime(2026, 11, 26, 8, tzinfo=UTC)
    item_id = sim.mailbox("alice@example.com").create(
        subject="Visit", start=start, end=start.replace(hour=9),
        body="<html><body><p>Hallo&nbsp;Team</p><p>Leiter mitbringen</p></body></html>",
    )  # fmt: skip
    (html,) = account.fetch([(item_id, None)], only_fields=["body"])
    assert str(html.body).startswith("<html>") and type(html.body).__name__ == "HTMLBody"
    # exchangelib has no public switch for BodyType=Text: ask over the wire directly.
    request = (
        '<?xml version="1.0" encoding="utf-8"?><s:Envelope '
        'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
        'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><s:Body><m:GetItem>'
        "<m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:BodyType>Text</t:BodyType>"
        '<t:AdditionalProperties><t:FieldURI FieldURI="item:Body"/></t:AdditionalProperties>'
        f'</m:ItemShape><m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem></s:Body>'
        "</s:Envelope>"
    )
    answer = requests.post(sim.url, data=request.encode(), auth=("alice@example.com", "secret"),
                           headers={"Content-Type": "text/xml"}, timeout=10)  # fmt: skip
    assert answer.status_code == 200
    assert '<t:Body BodyType="Text">Hallo\xa0Team\nLeiter mitbringen</t:Body>' in answer.text


def test_a_malformed_answer_is_an_error_not_a_hang(account):
    account, sim = account
    account.calendar  # noqa: B018 - folder lookups before the fault
    sim.inject_fault("malformed_xml", operation="FindItem", count=5)
    start = EWSDateTime(2026, 11, 1, tzinfo=BERLIN)
    with pytest.raises((MalformedResponseError, SOAPError)):
        list(account.calendar.view(start=start, end=local(2026, 12, 1), max_items=10))


def test_deleting_one_occurrence_through_ews_leaves_the_rest_of_the_series(account):
    account, sim = account
    series = save_standup(account)
    middle = list(account.calendar.view(start=local(2026, 11, 23, 0), end=local(2026, 11, 26, 0)))[
        1
    ]
    middle.delete()  # DeleteItem of an occurrence id
    assert view_days(account, local(2026, 11, 23, 0), local(2026, 11, 26, 0)) == [
        date(2026, 11, 23), date(2026, 11, 25),
    ]  # fmt: skip
    master = sim.mailbox("alice@example.com").get(series.id)
    assert master.deleted == {datetime(2026, 11, 24, 8, tzinfo=UTC)}
