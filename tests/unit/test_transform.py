"""transform: HTML bodies, raw Exchange items -> normalised appointments, fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ewssync import transform
from ewssync.errors import EwsSyncError
from ewssync.timezones import iana_to_windows
from ewssync.transform import NORMALIZED_COLUMNS, RAW_COLUMNS, html_to_text, normalize, summarize

WORD_HTML = """<html xmlns:v="urn:schemas-microsoft-com:vml" \
xmlns:o="urn:schemas-microsoft-com:office:office" xmlns:w="urn:schemas-microsoft-com:office:word" \
xmlns:m="http://schemas.microsoft.com/office/2004/12/omml" xmlns="http://www.w3.org/TR/REC-html40">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<meta name="Generator" content="Microsoft Word 15 (filtered medium)">
<!--[if !mso]><style>v\\:* {behavior:url(#default#VML);}
o\\:* {behavior:url(#default#VML);}
</style><![endif]-->
<style><!--
/* Font Definitions */
@font-face
\t{font-family:"Cambria Math";
\tpanose-1:2 4 5 3 5 4 6 3 2 4;}
p.MsoNormal, li.MsoNormal, div.MsoNormal
\t{margin:0cm;
\tfont-size:11.0pt;
\tfont-family:"Calibri",sans-serif;}
.MsoChpDefault
\t{mso-style-type:export-only;}
div.WordSection1
\t{page:WordSection1;}
--></style><!--[if gte mso 9]><xml>
<o:shapedefaults v:ext="edit" spidmax="1026" />
</xml><![endif]--><!--[if gte mso 9]><xml>
<o:shapelayout v:ext="edit">
<o:idmap v:ext="edit" data="1" />
</o:shapelayout></xml><![endif]-->
<script>alert("x")</script>
</head>
<body lang=DE link="#0563C1" vlink="#954F72" style="word-wrap:break-word">\r
<div class=WordSection1>\r
<p class=MsoNormal>Hallo&nbsp;Team,<o:p></o:p></p>\r
<p class=MsoNormal><o:p>&nbsp;</o:p></p>\r
<p class=MsoNormal>anbei die Agenda f&uuml;r Montag &amp; Dienstag:<o:p></o:p></p>\r
<p class=MsoNormal><o:p>&nbsp;</o:p></p>\r
<p class=MsoNormal><o:p>&nbsp;</o:p></p>\r
<p class=MsoListParagraph style="text-indent:-18.0pt;mso-list:l0 level1 lfo1"><![if !supportLists]>\
<span style="font-family:Symbol"><span style="mso-list:Ignore">&middot;<span style="font:7.0pt \
&quot;Times New Roman&quot;">&nbsp;&nbsp;&nbsp;&nbsp;&nbsp; </span></span></span><![endif]>\
Budget 2026<o:p></o:p></p>\r
<p class=MsoNormal>Zeile eins<br>Zeile zwei&nbsp;&nbsp; <o:p></o:p></p>\r
<!-- ein Kommentar -->\r
<p class=MsoNormal><span style="mso-fareast-language:EN-US"><!--[if gte vml 1]><v:shape \
id="Bild_x0020_1" type="#_x0000_t75" style="width:100pt"><v:imagedata \
src="cid:image001.png@01D" o:title=""/></v:shape><![endif]--><![if !vml]><img width=133 \
height=133 src="cid:image001.png@01D" v:shapes="Bild_x0020_1"><![endif]></span><o:p></o:p></p>\r
<p class=MsoNormal>Viele Gr&uuml;&szlig;e<o:p></o:p></p>\r
<p class=MsoNormal>Anna &lt;anna@example.com&gt;<o:p></o:p></p>\r
</div>\r
</body>\r
</html>\r
"""

WORD_TEXT = (
    "Hallo Team,\n\nanbei die Agenda für Montag & Dienstag:\n\n· Budget 2026\n\n"
    "Zeile eins\nZeile zwei\n\nViele Grüße\n\nAnna <anna@example.com>"
)


# --- html_to_text ---------------------------------------------------------------------------


def test_word_generated_outlook_body():
    assert html_to_text(WORD_HTML) == WORD_TEXT


@pytest.mark.parametrize(
    ("html", "text"),
    [
        (None, ""),
        ("", ""),
        ("   \r\n ", ""),
        ("<p>a</p><p>b</p>", "a\n\nb"),
        ("<div>line one<br>line two<br/>line three</div>", "line one\nline two\nline three"),
        ("<p>a</p>" + "<p>&nbsp;</p>" * 5 + "<p>b</p>", "a\n\nb"),
        ("<p>a</p><br><br><br><br><p>b</p>", "a\n\nb"),
        ("<p>x &amp; y &lt;z&gt; &quot;q&quot; &euro;&#8364;&#x20AC;</p>", 'x & y <z> "q" €€€'),
        ("<p>a&nbsp;b&nbsp;&nbsp;&nbsp;</p>", "a b"),
        ("<style>p {color:red}</style><p>shown</p>", "shown"),
        ("<script>var x = 1;</script><p>shown</p>", "shown"),
        ("<p>a<!-- hidden --></p>", "a"),
        ("<!--[if gte mso 9]><xml><o:OfficeDocumentSettings/></xml><![endif]--><p>a</p>", "a"),
        ("<p class=MsoNormal>a<o:p></o:p></p><p class=MsoNormal><o:p>&nbsp;</o:p></p>", "a"),
        ("<p><v:shape id=x><v:textbox>boxed</v:textbox></v:shape>after</p>", "boxedafter"),
        ("<div class=WordSection1><p>not indented</p></div>", "not indented"),
        ("plain text, no tags", "plain text, no tags"),
        ('<p><a href="https://example.com/x">the link</a></p>', "the link"),
        ("<p>trailing   </p><p>  </p><p>end</p>", "trailing\n\nend"),
    ],
)
def test_html_to_text(html, text):
    assert html_to_text(html) == text


@given(st.text(alphabet=st.sampled_from("ab <>/&;p\n\r\t\u00a0!-[]"), max_size=80))
def test_html_to_text_output_is_tidy(html):
    text = html_to_text(html)
    assert text == text.strip()
    assert "\r" not in text
    assert "\u00a0" not in text
    assert "\n\n\n" not in text
    assert all(line == line.rstrip() for line in text.split("\n"))


@pytest.mark.parametrize(
    ("text", "notes"),
    [
        ("line one\r\nline two\rline three\n", "line one\nline two\nline three\n"),
        ("  <b>not html</b>  ", "  <b>not html</b>  "),
        ("a\n\n\n\nb", "a\n\n\n\nb"),
        (None, ""),
    ],
)
def test_text_bodies_only_normalise_line_endings(text, notes):
    frame = normalize(
        raw_frame(item(body=text, body_type="Text")), keep_html=True, **DEFAULTS_NO_HTML
    )
    assert frame.loc[0, "notes"] == notes
    assert frame.loc[0, "notes_html"] is None


# --- normalize: helpers ---------------------------------------------------------------------

START = datetime(2026, 5, 6, 8, 0, tzinfo=UTC)
DEFAULTS = {"keep_html": False, "sync_private": False, "fallback_zone": "Europe/Berlin"}
DEFAULTS_NO_HTML = {"sync_private": False, "fallback_zone": "Europe/Berlin"}


def item(**overrides) -> dict:
    row = {
        "item_id": "AAMk-1",
        "change_key": "CQAAAB",
        "item_type": "Single",
        "uid": "040000008200E00074C5B7101A82E008-1",
        "recurrence_id": None,
        "master_item_id": None,
        "subject": "  Planning  ",
        "location": "Room 4.12",
        "body": "<p>Agenda&nbsp;</p>",
        "body_type": "HTML",
        "start": START,
        "end": START + timedelta(hours=1),
        "is_all_day": False,
        "start_date": None,
        "end_date": None,
        "timezone_windows": "W. Europe Standard Time",
        "timezone_iana": None,
        "sensitivity": "Normal",
        "reminder_is_set": True,
        "reminder_minutes": 15,
        "legacy_free_busy": "Busy",
        "categories": ["Customer"],
        "last_modified": START - timedelta(days=3),
        "is_recurring": False,
    }
    row.update(overrides)
    return row


def raw_frame(*items: dict) -> pd.DataFrame:
    return pd.DataFrame(list(items), columns=list(RAW_COLUMNS))


def one(**overrides) -> pd.Series:
    options = {**DEFAULTS, **{k: overrides.pop(k) for k in list(overrides) if k in DEFAULTS}}
    frame = normalize(raw_frame(item(**overrides)), **options)
    assert len(frame) == 1
    return frame.iloc[0]


# --- normalize: shape -------------------------------------------------------------------------


def test_columns_are_exactly_the_normalized_columns_in_order():
    frame = normalize(raw_frame(item(), item(item_id="AAMk-2")), **DEFAULTS)
    assert tuple(frame.columns) == NORMALIZED_COLUMNS
    assert len(RAW_COLUMNS) == 24 and len(NORMALIZED_COLUMNS) == 22


def test_a_single_item():
    row = one()
    assert row["ews_item_id"] == "AAMk-1"
    assert row["change_key"] == "CQAAAB"
    assert row["item_type"] == "Single"
    assert row["title"] == "Planning"
    assert row["location"] == "Room 4.12"
    assert row["notes"] == "Agenda"
    assert row["notes_html"] is None
    assert row["starts_at"] == START
    assert row["ends_at"] == START + timedelta(hours=1)
    assert str(row["starts_at"].tz) == "UTC"
    assert not row["all_day"]
    assert (row["start_date"], row["end_date"]) == (date(2026, 5, 6), date(2026, 5, 6))
    assert row["time_zone"] == "Europe/Berlin"
    assert not row["is_private"]
    assert row["reminder_minutes"] == 15
    assert row["show_as"] == "busy"
    assert row["category"] == "Customer"
    assert row["series_key"] is None and row["occurrence_key"] is None
    assert pd.isna(row["recurrence_id"])
    assert len(row["fingerprint"]) == 64


def test_empty_and_masters_only_give_an_empty_frame_with_the_columns():
    for raw in (raw_frame(), raw_frame(item(item_type="RecurringMaster"))):
        frame = normalize(raw, **DEFAULTS)
        assert frame.empty
        assert tuple(frame.columns) == NORMALIZED_COLUMNS


def test_recurring_masters_are_dropped():
    frame = normalize(
        raw_frame(
            item(item_id="master", item_type="RecurringMaster", is_recurring=True),
            item(item_id="occ", item_type="Occurrence", recurrence_id=START, is_recurring=True),
        ),
        **DEFAULTS,
    )
    assert frame["ews_item_id"].tolist() == ["occ"]


def test_missing_raw_column_is_an_error_naming_it():
    with pytest.raises(EwsSyncError, match="body_type"):
        normalize(raw_frame(item()).drop(columns=["body_type"]), **DEFAULTS)


def test_invalid_fallback_zone_is_an_error():
    with pytest.raises(EwsSyncError, match="fallback zone"):
        normalize(raw_frame(item()), keep_html=False, sync_private=False, fallback_zone="Mars")


def test_input_index_does_not_matter():
    raw = raw_frame(item(item_id="a"), item(item_id="b", subject="B"))
    raw.index = [10, 3]
    frame = normalize(raw, **DEFAULTS)
    assert frame["ews_item_id"].tolist() == ["a", "b"]
    assert frame["title"].tolist() == ["Planning", "B"]


# --- series -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item_type", "recurrence_id", "series_key", "occurrence_key"),
    [
        ("Single", None, None, None),
        ("Occurrence", START, "UID-1", "2026-05-06T08:00:00Z"),
        ("Exception", START - timedelta(days=1), "UID-1", "2026-05-05T08:00:00Z"),
        # recurrence id in another zone: converted to UTC
        (
            "Exception",
            datetime(2026, 5, 5, 10, tzinfo=ZoneInfo("Europe/Berlin")),
            "UID-1",
            "2026-05-05T08:00:00Z",
        ),
        # an occurrence's original start is its start
        ("Occurrence", None, "UID-1", "2026-05-06T08:00:00Z"),
    ],
)
def test_series_and_occurrence_keys(item_type, recurrence_id, series_key, occurrence_key):
    row = one(item_type=item_type, recurrence_id=recurrence_id, uid="UID-1")
    assert row["series_key"] == series_key
    assert row["occurrence_key"] == occurrence_key
    if occurrence_key:
        assert row["recurrence_id"] == pd.Timestamp(occurrence_key)
    else:
        assert pd.isna(row["recurrence_id"])


# --- privacy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sensitivity", "sync_private", "kept", "is_private"),
    [
        ("Normal", False, True, False),
        ("Personal", False, True, False),  # a label only: synced as normal
        ("Private", False, False, None),
        ("Confidential", False, False, None),
        ("Private", True, True, True),
        ("Confidential", True, True, True),
        ("Personal", True, True, False),
        (None, False, True, False),
    ],
)
def test_privacy(sensitivity, sync_private, kept, is_private):
    frame = normalize(
        raw_frame(item(sensitivity=sensitivity)),
        keep_html=False,
        sync_private=sync_private,
        fallback_zone="UTC",
    )
    assert len(frame) == (1 if kept else 0)
    if kept:
        assert bool(frame.loc[0, "is_private"]) is is_private


# --- zones and dates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timezone_iana", "timezone_windows", "expected"),
    [
        ("Asia/Tokyo", "W. Europe Standard Time", "Asia/Tokyo"),
        (None, "Tokyo Standard Time", "Asia/Tokyo"),
        (None, "(UTC-05:00) Eastern Time (US & Canada)", "America/New_York"),
        (None, "Customized Time Zone", "America/Chicago"),
        (None, "Unknown Standard Time", "America/Chicago"),
        (None, None, "America/Chicago"),
        ("Not/AZone", "Romance Standard Time", "Europe/Paris"),
        (float("nan"), "Romance Standard Time", "Europe/Paris"),
        ("localtime", None, "America/Chicago"),
    ],
)
def test_time_zone(timezone_iana, timezone_windows, expected):
    row = one(
        timezone_iana=timezone_iana,
        timezone_windows=timezone_windows,
        fallback_zone="America/Chicago",
    )
    assert row["time_zone"] == expected


@pytest.mark.parametrize(
    ("start", "hours", "zone", "dates"),
    [
        # 23:30 UTC is already the next day in Tokyo
        (datetime(2026, 5, 6, 23, 30, tzinfo=UTC), 1, "Tokyo Standard Time", ("05-07", "05-07")),
        # 01:00 UTC is still the previous day in Newfoundland (UTC-2:30 in May)
        (
            datetime(2026, 5, 7, 1, 0, tzinfo=UTC),
            1,
            "Newfoundland Standard Time",
            ("05-06", "05-06"),
        ),
        # over midnight in Berlin
        (datetime(2026, 5, 6, 21, 0, tzinfo=UTC), 2, "W. Europe Standard Time", ("05-06", "05-07")),
        # Kiritimati is UTC+14
        (
            datetime(2026, 5, 6, 10, 0, tzinfo=UTC),
            1,
            "Line Islands Standard Time",
            ("05-07", "05-07"),
        ),
    ],
)
def test_timed_items_get_local_dates_in_their_zone(start, hours, zone, dates):
    row = one(start=start, end=start + timedelta(hours=hours), timezone_windows=zone)
    assert (row["start_date"].isoformat()[5:], row["end_date"].isoformat()[5:]) == dates


def test_all_day_item_keeps_exchanges_dates():
    # A one-day item on 6 May in Tokyo: its instants are 5 May 15:00 UTC .. 6 May 15:00 UTC.
    row = one(
        is_all_day=True,
        start=datetime(2026, 5, 5, 15, tzinfo=UTC),
        end=datetime(2026, 5, 6, 15, tzinfo=UTC),
        start_date=date(2026, 5, 6),
        end_date=date(2026, 5, 6),
        timezone_windows="Tokyo Standard Time",
    )
    assert bool(row["all_day"])
    assert (row["start_date"], row["end_date"]) == (date(2026, 5, 6), date(2026, 5, 6))


def test_all_day_item_without_dates_uses_its_zone_and_an_inclusive_end():
    row = one(
        is_all_day=True,
        start=datetime(2026, 5, 5, 15, tzinfo=UTC),
        end=datetime(2026, 5, 7, 15, tzinfo=UTC),
        timezone_windows="Tokyo Standard Time",
    )
    assert (row["start_date"], row["end_date"]) == (date(2026, 5, 6), date(2026, 5, 7))


def test_all_day_dates_as_strings_or_datetimes():
    row = one(is_all_day=True, start_date="2026-05-06", end_date=datetime(2026, 5, 8), start=START)
    assert (row["start_date"], row["end_date"]) == (date(2026, 5, 6), date(2026, 5, 8))


ZONES = [
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Asia/Tokyo",
    "America/St_Johns",
    "Europe/Berlin",
    "UTC",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
]


def all_day_item(day: date, length: int, zone: str, named_as: str = "iana") -> dict:
    """An all-day item as Exchange sends it: instants at local midnights of ``zone``; the zone
    named by its IANA name, its Windows id, or not at all ("Customized Time Zone")."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, datetime.min.time(), tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=length), datetime.min.time(), tz).astimezone(UTC)
    names = {
        "iana": (zone, None),
        "windows": (None, iana_to_windows(zone)),
        "custom": (None, "Customized Time Zone"),
    }
    return item(
        is_all_day=True,
        start=start,
        end=end,
        start_date=day,
        end_date=day + timedelta(days=length - 1),
        timezone_iana=names[named_as][0],
        timezone_windows=names[named_as][1],
    )


@given(
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2037, 12, 31)),
    length=st.integers(min_value=1, max_value=40),
    zone=st.sampled_from(ZONES),
    fallback=st.sampled_from(ZONES),
    named_as=st.sampled_from(["iana", "windows", "custom"]),
)
@settings(max_examples=300, deadline=None)
def test_all_day_items_keep_their_dates_in_every_zone(day, length, zone, fallback, named_as):
    # With "custom" the instants belong to a zone the pipeline cannot know (it uses the
    # fallback): the dates must still be Exchange's, not recomputed from the instants.
    raw = raw_frame(all_day_item(day, length, zone, named_as))
    row = normalize(raw, keep_html=False, sync_private=False, fallback_zone=fallback).iloc[0]
    assert row["start_date"] == day
    assert row["end_date"] == day + timedelta(days=length - 1)
    assert row["end_date"] >= row["start_date"]


@given(
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2037, 12, 31)),
    length=st.integers(min_value=1, max_value=40),
    zone=st.sampled_from(ZONES),
)
@settings(max_examples=100, deadline=None)
def test_all_day_without_exchange_dates_still_lands_on_the_right_days(day, length, zone):
    raw = raw_frame({**all_day_item(day, length, zone), "start_date": None, "end_date": None})
    row = normalize(raw, keep_html=False, sync_private=False, fallback_zone="UTC").iloc[0]
    assert (row["start_date"], row["end_date"]) == (day, day + timedelta(days=length - 1))


@pytest.fixture
def host_zone():
    """Switch the process's local time zone (TZ + tzset) and restore it afterwards."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available on this platform")
    before = os.environ.get("TZ")

    def switch(zone: str) -> None:
        os.environ["TZ"] = zone
        time.tzset()

    yield switch
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_results_do_not_depend_on_the_hosts_time_zone(host_zone):
    raw = raw_frame(
        *(
            all_day_item(date(2026, 5, 6), 1, zone, ("iana", "windows", "custom")[i % 3])
            | {"item_id": f"allday-{zone}", "uid": f"u{i}"}
            for i, zone in enumerate(ZONES)
        ),
        item(item_id="custom", timezone_windows="Customized Time Zone"),
        item(item_id="none", timezone_windows=None, start=datetime(2026, 5, 6, 23, tzinfo=UTC)),
        item(item_id="naive", start=datetime(2026, 5, 6, 23), end=datetime(2026, 5, 7, 1)),
    )
    results = []
    for zone in (
        "UTC",
        "Asia/Tokyo",
        "Pacific/Kiritimati",
        "America/St_Johns",
        "Pacific/Pago_Pago",
    ):
        host_zone(zone)
        results.append(normalize(raw, keep_html=True, sync_private=True, fallback_zone="UTC"))
    for other in results[1:]:
        pd.testing.assert_frame_equal(results[0], other)
    naive = results[0].set_index("ews_item_id").loc["naive"]
    assert naive["starts_at"] == datetime(2026, 5, 6, 23, tzinfo=UTC)  # naive means UTC


# --- show-as, reminder, category, notes -------------------------------------------------------


@pytest.mark.parametrize(
    ("legacy_free_busy", "expected"),
    [
        ("Free", "free"),
        ("Tentative", "tentative"),
        ("Busy", "busy"),
        ("OOF", "away"),
        ("WorkingElsewhere", "working_elsewhere"),
        ("NoData", "busy"),
        (None, "busy"),
        ("Something new", "busy"),
    ],
)
def test_show_as(legacy_free_busy, expected):
    assert one(legacy_free_busy=legacy_free_busy)["show_as"] == expected


@pytest.mark.parametrize(
    ("is_set", "minutes", "expected"),
    [(True, 15, 15), (True, 0, 0), (False, 15, None), (True, None, None), (None, 30, None)],
)
def test_reminder_minutes(is_set, minutes, expected):
    value = one(reminder_is_set=is_set, reminder_minutes=minutes)["reminder_minutes"]
    assert (None if pd.isna(value) else int(value)) == expected


@pytest.mark.parametrize(
    ("categories", "expected"),
    [
        (["Customer", "Internal"], "Customer"),
        (("Internal",), "Internal"),
        (["", "  ", " Travel "], "Travel"),
        ([], None),
        (None, None),
        ("Customer", "Customer"),  # a bare string is one category, not letters
    ],
)
def test_category_is_the_first_category(categories, expected):
    assert one(categories=categories)["category"] == expected


@pytest.mark.parametrize(
    ("subject", "location", "title", "where"),
    [("  Planning \n", None, "Planning", ""), (None, "  Room  ", "", "Room"), ("", "", "", "")],
)
def test_title_and_location(subject, location, title, where):
    row = one(subject=subject, location=location)
    assert (row["title"], row["location"]) == (title, where)


def test_keep_html_keeps_the_original_html_beside_the_text():
    kept = one(body=WORD_HTML, keep_html=True)
    assert kept["notes"] == WORD_TEXT
    assert kept["notes_html"] == WORD_HTML
    dropped = one(body=WORD_HTML, keep_html=False)
    assert dropped["notes"] == WORD_TEXT
    assert dropped["notes_html"] is None


@pytest.mark.parametrize("body", [None, "", float("nan")])
def test_empty_bodies(body):
    row = one(body=body, keep_html=True)
    assert row["notes"] == ""
    assert row["notes_html"] is None


def test_missing_body_type_is_guessed_from_the_content():
    assert one(body="<p>x&amp;y</p>", body_type=None)["notes"] == "x&y"
    assert one(body="x &amp; y", body_type=None)["notes"] == "x &amp; y"


def test_identical_bodies_are_converted_once(monkeypatch):
    calls = []
    real = transform.html_to_text

    def counting(html):
        calls.append(html)
        return real(html)

    monkeypatch.setattr(transform, "html_to_text", counting)
    raw = raw_frame(
        *(item(item_id=f"i{i}", body=f"<p>body {i % 3}</p>") for i in range(30)),
        item(item_id="empty", body=""),
        item(item_id="none", body=None),
    )
    frame = normalize(raw, **DEFAULTS)
    assert sorted(calls) == ["<p>body 0</p>", "<p>body 1</p>", "<p>body 2</p>"]
    assert frame["notes"].tolist()[:4] == ["body 0", "body 1", "body 2", "body 0"]


# --- fingerprint --------------------------------------------------------------------------------


def fingerprint_of(**overrides) -> str:
    return one(**overrides)["fingerprint"]


def test_fingerprint_is_pinned():
    # A change here changes every stored fingerprint: bump FINGERPRINT_VERSION on purpose.
    payload = [
        "v1", "Planning", "Room 4.12", "Agenda", None, "2026-05-06T08:00:00Z",
        "2026-05-06T09:00:00Z", False, "2026-05-06", "2026-05-06", "Europe/Berlin", False, 15,
        "busy", "Customer",
    ]  # fmt: skip
    encoded = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert fingerprint_of() == hashlib.sha256(encoded).hexdigest()
    assert fingerprint_of() == "d8e1d904ec3f765b94d60325f0aec412bb9f890b9ccf521d9a8a67091471b5ec"


@pytest.mark.parametrize(
    "bookkeeping",
    [
        {"item_id": "other"},
        {"change_key": "other"},
        {"last_modified": START},
        {"uid": "other"},
        {"master_item_id": "m"},
        {"is_recurring": True},
        {"categories": ["Customer", "Internal"]},  # only the first is content
        {"timezone_windows": None, "timezone_iana": "Europe/Berlin"},  # same zone
        {"body": "<p>Agenda</p>"},  # same text
        {"start": START.astimezone(ZoneInfo("Asia/Tokyo"))},  # same instant
    ],
)
def test_fingerprint_ignores_ids_and_bookkeeping(bookkeeping):
    assert fingerprint_of(**bookkeeping) == fingerprint_of()


@pytest.mark.parametrize(
    "content",
    [
        {"subject": "Other"},
        {"location": "Other"},
        {"body": "<p>Other</p>"},
        {"start": START + timedelta(minutes=1)},
        {"end": START + timedelta(hours=2)},
        {"is_all_day": True, "start_date": date(2026, 5, 6), "end_date": date(2026, 5, 6)},
        {"timezone_windows": "Romance Standard Time"},
        {"sensitivity": "Private", "sync_private": True},
        {"reminder_minutes": 30},
        {"reminder_is_set": False},
        {"legacy_free_busy": "Free"},
        {"categories": ["Internal"]},
        {"categories": []},
        {"keep_html": True},  # notes_html is content
    ],
)
def test_fingerprint_changes_with_content(content):
    assert fingerprint_of(**content) != fingerprint_of()


@given(
    item_id=st.text(min_size=1, max_size=20),
    change_key=st.text(max_size=20),
    modified=st.datetimes(timezones=st.just(UTC)),
    title=st.text(max_size=30),
)
@settings(max_examples=50, deadline=None)
def test_fingerprint_depends_on_content_only(item_id, change_key, modified, title):
    base = fingerprint_of(subject=title)
    assert fingerprint_of(subject=title, item_id=item_id, change_key=change_key,
                          last_modified=modified) == base  # fmt: skip
    if title.strip() != "Planning":
        assert fingerprint_of(subject=title + "x") != base


# --- summarize ----------------------------------------------------------------------------------


def test_summarize():
    raw = raw_frame(
        item(item_id="a"),
        item(item_id="b", sensitivity="Private"),
        item(item_id="c", is_all_day=True, start_date=date(2026, 5, 6), end_date=date(2026, 5, 6)),
        item(item_id="d", item_type="Occurrence", recurrence_id=START),
        item(item_id="e", item_type="Exception", recurrence_id=START, sensitivity="Confidential"),
        item(item_id="m", item_type="RecurringMaster"),
    )
    frame = normalize(raw, keep_html=False, sync_private=True, fallback_zone="UTC")
    assert summarize(frame) == {"rows": 5, "private": 2, "all_day": 1, "recurring": 2}
    assert summarize(frame.iloc[0:0]) == {"rows": 0, "private": 0, "all_day": 0, "recurring": 0}


# --- scale --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_100k_rows_normalize_whole():
    # How fast this runs is make bench's business (no timing assertions in tests); here: at scale,
    # every row comes out, each with its own fingerprint.
    rows = [
        item(
            item_id=f"i{i}",
            start=START + timedelta(minutes=i),
            end=START + timedelta(minutes=i + 30),
            body=f"<p>body {i % 500}</p>" if i % 4 else None,
            item_type=("Single", "Occurrence", "Exception")[i % 3],
            recurrence_id=START + timedelta(minutes=i),
            timezone_windows=("W. Europe Standard Time", "Customized Time Zone", None)[i % 3],
        )
        for i in range(100_000)
    ]
    raw = raw_frame(*rows)
    frame = normalize(raw, keep_html=True, sync_private=True, fallback_zone="Europe/Berlin")
    assert len(frame) == 100_000
    assert frame["fingerprint"].nunique() == 100_000
