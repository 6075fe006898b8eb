"""Pure rules behind the reliability fixes: repairs the calendar table needs, huge HTML text,
whole-credential masking, credentials in the server URL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from ewssync.errors import SettingsError
from ewssync.exchange.redact import SecretFilter
from ewssync.settings import service_endpoint_for
from ewssync.transform import NORMALIZED_COLUMNS, fingerprints, html_to_text, repair

START = datetime(2026, 11, 26, 9, tzinfo=UTC)


def row(item_id: str, **overrides) -> dict:
    base = dict.fromkeys(NORMALIZED_COLUMNS)
    base.update(
        ews_item_id=item_id, title=item_id, starts_at=START, ends_at=START + timedelta(hours=1),
        all_day=False, start_date=START.date(), end_date=START.date(), reminder_minutes=15,
        show_as="busy", time_zone="UTC", is_private=False, location="", notes="",
    )  # fmt: skip
    base.update(overrides)
    return base


def frame(*rows) -> pd.DataFrame:
    result = pd.DataFrame(list(rows))
    result["fingerprint"] = fingerprints(result)
    return result


def test_repair_leaves_good_rows_alone():
    good = frame(row("A"), row("B", all_day=True, end_date=date(2026, 11, 27)))
    repaired, notes = repair(good)
    assert notes == [] and repaired.equals(good)


@pytest.mark.parametrize(
    ("overrides", "problem", "check"),
    [
        ({"ends_at": START - timedelta(hours=1)}, "ends before it starts",
         lambda r: r["ends_at"] == START),
        ({"all_day": True, "start_date": date(2026, 11, 26), "end_date": date(2026, 11, 25),
          "ends_at": START},
         "all-day item of zero days",
         lambda r: r["end_date"] == date(2026, 11, 26) and r["ends_at"] > r["starts_at"]),
        ({"reminder_minutes": 50000}, "reminder outside 0..40320 minutes",
         lambda r: r["reminder_minutes"] is None),
        ({"reminder_minutes": -5}, "reminder outside 0..40320 minutes",
         lambda r: r["reminder_minutes"] is None),
    ],
)  # fmt: skip
def test_repair_fixes_what_the_table_refuses_and_names_it(overrides, problem, check):
    bad = frame(row("OK"), row("BAD", **overrides))
    repaired, notes = repair(bad)
    assert [(n["item_id"], n["problem"]) for n in notes] == [("BAD", problem)]
    fixed = repaired.set_index("ews_item_id").loc["BAD"]
    assert check(fixed)
    assert fixed["fingerprint"] != bad.set_index("ews_item_id").loc["BAD", "fingerprint"]
    assert (
        repaired.set_index("ews_item_id").loc["OK"].equals(bad.set_index("ews_item_id").loc["OK"])
    )


def test_a_text_run_over_lxmls_limit_is_kept():
    text = "x" * 10_000_001
    assert html_to_text(f"<html><body><p>{text}</p></body></html>") == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("token expired", "token expired"),
        ("password x rejected", "password *** rejected"),
        ("x", "***"),
        ("(x)", "(***)"),
        ("xx and x-ray", "xx and ***-ray"),
    ],
)
def test_a_short_password_is_masked_only_as_a_whole(text, expected):
    secrets = SecretFilter()
    secrets.add("u", "x")
    assert secrets.scrub(text) == expected


@pytest.mark.parametrize(
    "server",
    ["https://alice:Sup3rSecret@mail.example.com/EWS/Exchange.asmx", "alice:Sup3rSecret@mail",
     "https://alice@mail.example.com"],
)  # fmt: skip
def test_credentials_in_the_server_are_refused_without_echoing_them(server):
    with pytest.raises(SettingsError) as caught:
        service_endpoint_for("ews_x", server)
    assert "Sup3rSecret" not in str(caught.value) and "alice" not in str(caught.value)


def test_copy_values_keep_strings_quoted_and_nulls_unquoted():
    import csv
    import io

    import numpy as np

    from ewssync.store import _NULL_TEXT, _csv_value

    values = [None, "", "\\N", "nan", True, np.bool_(False), 3, np.int64(4), 2.5, float("nan"),
              pd.NaT, pd.NA, date(2026, 11, 26), ["a,b", 'c"d']]  # fmt: skip
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC).writerow(
        [_csv_value(v) for v in values]
    )
    fields = buffer.getvalue().rstrip("\n").split(",")
    assert fields[:4] == [_NULL_TEXT, '""', '"\\N"', '"nan"']  # only the NULL is unquoted nan
    assert fields[4:10] == ['"t"', '"f"', "3", "4", "2.5", _NULL_TEXT]
    assert fields[10:13] == [_NULL_TEXT, _NULL_TEXT, '"2026-11-26"']
