"""SyncSettings: defaults, every field's validation, the window, the app-user guard, secrecy."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest

from ewssync.errors import SettingsError
from ewssync.settings import EXTRA_FIELDS, FIELD_DOCS, SyncSettings

PASSWORD = "S3cr3t-Pa55word!"


def connection(extra=None, **overrides):
    fields = {
        "conn_id": "ews_alice",
        "conn_type": "ews",
        "host": "outlook.office365.com",
        "login": "alice@example.com",
        "password": PASSWORD,
        "description": "Alice's calendar",
        "port": None,
        "schema": None,
        "extra": json.dumps({"app_user": "alice"} if extra is None else extra),
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


def parse(extra=None, **overrides) -> SyncSettings:
    base = {"app_user": "alice"}
    base.update(extra or {})
    return SyncSettings.from_connection(connection(base, **overrides))


def test_defaults():
    settings = parse()
    assert settings.conn_id == "ews_alice"
    assert settings.title == "Alice's calendar"
    assert settings.server == "outlook.office365.com"
    assert settings.service_endpoint == "https://outlook.office365.com/EWS/Exchange.asmx"
    assert settings.username == "alice@example.com"
    assert settings.mailbox == "alice@example.com"
    assert settings.app_user == "alice"
    expected = {
        "use_2007_protocol": False,
        "activated": True,
        "sync_private": False,
        "alarm_on_new": False,
        "alarm_minutes": 15,
        "exchange_timezone": "UTC",
        "keep_html": False,
        "weeks_back": 4,
        "weeks_ahead": 26,
        "schedule": "*/30 * * * *",
        "allow_mailbox_mismatch": False,
        "verify_tls": True,
        "timeout_seconds": 30,
        "test_write": True,
        "concurrency": 4,
        "lean_parser": True,
    }
    assert {key: getattr(settings, key) for key in expected} == expected


def test_every_setting_is_documented():
    assert set(FIELD_DOCS) == set(EXTRA_FIELDS)


def test_models_connection_and_extra_dejson():
    conn = connection()
    conn.extra_dejson = {"app_user": "alice", "weeks_back": "2"}
    assert SyncSettings.from_connection(conn).weeks_back == 2


@pytest.mark.parametrize(
    ("server", "port", "endpoint"),
    [
        ("outlook.office365.com", None, "https://outlook.office365.com/EWS/Exchange.asmx"),
        ("mail.example.com", 8443, "https://mail.example.com:8443/EWS/Exchange.asmx"),
        (
            "https://mail.example.com/EWS/Exchange.asmx",
            None,
            "https://mail.example.com/EWS/Exchange.asmx",
        ),
        ("https://mail.example.com", None, "https://mail.example.com/EWS/Exchange.asmx"),
        (
            "http://127.0.0.1:8123/EWS/Exchange.asmx",
            None,
            "http://127.0.0.1:8123/EWS/Exchange.asmx",
        ),
        ("  outlook.office365.com ", None, "https://outlook.office365.com/EWS/Exchange.asmx"),
    ],
)
def test_server_to_endpoint(server, port, endpoint):
    assert parse(host=server, port=port).service_endpoint == endpoint


@pytest.mark.parametrize(
    ("key", "given", "expected"),
    [
        ("use_2007_protocol", True, True),
        ("use_2007_protocol", "true", True),
        ("use_2007_protocol", "Yes", True),
        ("use_2007_protocol", "1", True),
        ("use_2007_protocol", 1, True),
        ("use_2007_protocol", "on", True),
        ("use_2007_protocol", "false", False),
        ("use_2007_protocol", "no", False),
        ("use_2007_protocol", 0, False),
        ("activated", False, False),
        ("activated", "", True),  # an untouched form field means the default
        ("activated", None, True),
        ("sync_private", "yes", True),
        ("alarm_on_new", "true", True),
        ("alarm_minutes", 0, 0),
        ("alarm_minutes", "40320", 40320),
        ("alarm_minutes", 30.0, 30),
        ("exchange_timezone", "Europe/Berlin", "Europe/Berlin"),
        ("exchange_timezone", "W. Europe Standard Time", "Europe/Berlin"),
        ("exchange_timezone", "Tokyo Standard Time", "Asia/Tokyo"),
        ("exchange_timezone", "UTC", "UTC"),
        ("keep_html", "true", True),
        ("weeks_back", 0, 0),
        ("weeks_back", "52", 52),
        ("weeks_ahead", 1, 1),
        ("weeks_ahead", 100, 100),
        ("schedule", "0 * * * *", "0 * * * *"),
        ("schedule", "@hourly", "@hourly"),
        ("schedule", "@daily", "@daily"),
        ("schedule", "none", None),
        ("schedule", "None", None),
        ("schedule", "*/5 6-18 * * 1-5", "*/5 6-18 * * 1-5"),
        ("allow_mailbox_mismatch", "true", True),
        ("verify_tls", "false", False),
        ("timeout_seconds", 5, 5),
        ("test_write", False, False),
        ("concurrency", 1, 1),
        ("concurrency", "16", 16),
        ("lean_parser", "false", False),
        ("mailbox", "Shared.Calendar@Example.com", "shared.calendar@example.com"),
    ],
)
def test_valid_values(key, given, expected):
    assert getattr(parse({key: given}), key) == expected


@pytest.mark.parametrize(
    ("extra", "overrides", "field", "says"),
    [
        ({"use_2007_protocol": "maybe"}, {}, "use_2007_protocol", "true or false"),
        ({"activated": "2"}, {}, "activated", "true or false"),
        ({"sync_private": [1]}, {}, "sync_private", "true or false"),
        ({"alarm_on_new": "ja"}, {}, "alarm_on_new", "true or false"),
        ({"keep_html": "x"}, {}, "keep_html", "true or false"),
        ({"allow_mailbox_mismatch": "sure"}, {}, "allow_mailbox_mismatch", "true or false"),
        ({"verify_tls": "nope"}, {}, "verify_tls", "true or false"),
        ({"test_write": "y"}, {}, "test_write", "true or false"),
        ({"alarm_minutes": -1}, {}, "alarm_minutes", "0 to 40320"),
        ({"alarm_minutes": 40321}, {}, "alarm_minutes", "0 to 40320"),
        ({"alarm_minutes": "fifteen"}, {}, "alarm_minutes", "whole number"),
        ({"alarm_minutes": 1.5}, {}, "alarm_minutes", "whole number"),
        ({"alarm_minutes": True}, {}, "alarm_minutes", "whole number"),
        ({"exchange_timezone": "Mars/Olympus"}, {}, "exchange_timezone", "IANA zone"),
        ({"exchange_timezone": "Customized Time Zone"}, {}, "exchange_timezone", "Windows"),
        ({"weeks_back": -1}, {}, "weeks_back", "0 to 103"),
        ({"weeks_back": 104}, {}, "weeks_back", "0 to 103"),
        ({"weeks_ahead": 0}, {}, "weeks_ahead", "1 to 104"),
        ({"weeks_ahead": 105}, {}, "weeks_ahead", "1 to 104"),
        ({"weeks_back": 60, "weeks_ahead": 60}, {}, "weeks_ahead", "104 weeks"),
        ({"schedule": "every 30 minutes"}, {}, "schedule", "cron expression"),
        ({"schedule": "61 * * * *"}, {}, "schedule", "cron expression"),
        ({"schedule": "* * *"}, {}, "schedule", "cron expression"),
        ({"schedule": "@sometimes"}, {}, "schedule", "preset"),
        ({"timeout_seconds": 0}, {}, "timeout_seconds", "1 to 600"),
        ({"timeout_seconds": "slow"}, {}, "timeout_seconds", "whole number"),
        ({"concurrency": 0}, {}, "concurrency", "1 to 16"),
        ({"concurrency": 17}, {}, "concurrency", "1 to 16"),
        ({"concurrency": "many"}, {}, "concurrency", "whole number"),
        ({"lean_parser": "fast"}, {}, "lean_parser", "true or false"),
        ({"mailbox": "not-an-address"}, {}, "mailbox", "e-mail address"),
        ({"app_user": ""}, {}, "app_user", "calendar.users"),
        ({"app_user": None}, {}, "app_user", "calendar.users"),
        ({}, {"login": "CONTOSO\\alice"}, "mailbox", "primary SMTP address"),
        ({}, {"host": ""}, "server", "host name"),
        ({}, {"host": None}, "server", "host name"),
        ({}, {"host": "ftp://mail.example.com"}, "server", "http(s) URL"),
        ({}, {"host": "mail example com"}, "server", "host name"),
        ({}, {"login": ""}, "login", "user name"),
        ({}, {"password": ""}, "password", "password is empty"),
        ({}, {"password": None}, "password", "password is empty"),
        ({}, {"conn_type": "http"}, "conn_type", "'ews'"),
    ],
)
def test_invalid_values(extra, overrides, field, says):
    with pytest.raises(SettingsError) as caught:
        parse(extra, **overrides)
    error = caught.value
    assert error.conn_id == "ews_alice"
    assert error.field == field
    assert "'ews_alice'" in str(error)
    assert repr(field) in str(error)
    assert says in str(error)
    assert PASSWORD not in str(error)


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("weeks_forward", "weeks_ahead"),
        ("alarm_minute", "alarm_minutes"),
        ("use2007protocol", "use_2007_protocol"),
        ("timzone", None),
    ],
)
def test_unknown_key_names_it_and_suggests(key, suggestion):
    with pytest.raises(SettingsError) as caught:
        parse({key: 1})
    assert caught.value.field == key
    assert "unknown setting" in str(caught.value)
    if suggestion:
        assert f"did you mean {suggestion!r}" in str(caught.value)


@pytest.mark.parametrize("extra", ["{not json", "[1, 2]"])
def test_extra_must_be_a_json_object(extra):
    conn = connection()
    conn.extra = extra
    with pytest.raises(SettingsError) as caught:
        SyncSettings.from_connection(conn)
    assert caught.value.field == "extra"


def test_password_never_shown():
    settings = parse()
    assert settings.password == PASSWORD
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    assert "password" not in settings.public_dict()
    assert PASSWORD not in json.dumps(settings.public_dict(), default=str)


def test_settings_are_frozen():
    settings = parse()
    with pytest.raises(AttributeError):
        settings.weeks_back = 3


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        (datetime(2026, 5, 6, 13, 45, tzinfo=UTC), date(2026, 4, 8), date(2026, 11, 4)),
        (datetime(2026, 5, 6, 0, 0, tzinfo=UTC), date(2026, 4, 8), date(2026, 11, 4)),
        # 01:30 in Berlin is still the 5th in UTC: the window follows UTC days
        (datetime.fromisoformat("2026-05-06T01:30:00+02:00"), date(2026, 4, 7), date(2026, 11, 3)),
    ],
)
def test_window_aligned_to_utc_midnight(now, start, end):
    low, high = parse().window(now)
    assert (low, high) == (
        datetime(start.year, start.month, start.day, tzinfo=UTC),
        datetime(end.year, end.month, end.day, tzinfo=UTC),
    )


def test_window_needs_aware_time():
    with pytest.raises(ValueError):
        parse().window(datetime(2026, 5, 6, 12, 0))


def test_app_user_guard():
    settings = parse()
    settings.validate_app_user({"id": 1, "login": "alice", "email": "Alice@Example.com"})
    with pytest.raises(SettingsError) as unknown:
        settings.validate_app_user(None)
    assert unknown.value.field == "app_user"
    with pytest.raises(SettingsError) as mismatch:
        settings.validate_app_user({"id": 2, "login": "alice", "email": "bob@example.com"})
    assert mismatch.value.field == "mailbox"
    assert "allow_mailbox_mismatch" in str(mismatch.value)
    shared = parse({"allow_mailbox_mismatch": True})
    shared.validate_app_user({"id": 2, "login": "alice", "email": "bob@example.com"})


def test_every_invalid_field_is_reported_at_once():
    with pytest.raises(SettingsError) as caught:
        parse(
            {"app_user": None, "weeks_back": 200, "exchange_timezone": "Mars/Olympus",
             "auth_method": "kerberos", "weeks_forward": 3, "alarm_minutes": "soon"},
            password="", host="",
        )  # fmt: skip
    error = caught.value
    assert error.fields == [
        "weeks_forward", "alarm_minutes", "exchange_timezone", "auth_method", "weeks_back",
        "server", "password", "app_user",
    ]  # fmt: skip
    assert error.field == "weeks_forward"  # the first, as before
    message = str(error)
    assert message.startswith("connection 'ews_alice': 8 settings are invalid:")
    for field, problem in error.problems:
        assert f"field {field!r}: {problem}" in message.splitlines()
    assert "Mars/Olympus" in message and "is 200; allowed is 0 to 103" in message
    assert "did you mean 'weeks_ahead'" in message


def test_a_check_that_needs_an_invalid_field_waits_for_it():
    # weeks_back is out of range: the combined window limit is not judged on it
    with pytest.raises(SettingsError) as caught:
        parse({"weeks_back": 200, "weeks_ahead": 60})
    assert caught.value.fields == ["weeks_back"]
    # an unknown auth_method: whether a user name is needed is not judged either
    with pytest.raises(SettingsError) as caught:
        parse({"auth_method": "kerberos"}, login="")
    assert caught.value.fields == ["auth_method"]


def test_one_invalid_field_reads_as_before():
    with pytest.raises(SettingsError) as caught:
        parse({"weeks_back": 200})
    assert (
        str(caught.value)
        == "connection 'ews_alice': field 'weeks_back': is 200; allowed is 0 to 103"
    )
    assert caught.value.problems == [("weeks_back", "is 200; allowed is 0 to 103")]
