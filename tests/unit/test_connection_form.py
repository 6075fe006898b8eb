"""The connection form's schema (provider_info) refuses what SyncSettings refuses, where Airflow's
form can say it: each limit is derived from SyncSettings' own constants and checked here by
asking SyncSettings itself."""

from __future__ import annotations

import json
from types import SimpleNamespace

import jsonschema
import pytest

from ewssync.errors import SettingsError
from ewssync.provider_info import conn_fields
from ewssync.settings import EXTRA_FIELDS, INT_RANGES, REQUIRED_EXTRA, SyncSettings

FIELDS = conn_fields()
# what makes a range's far end valid on its own (the other side of a combined limit at its least)
COMPANIONS = {
    "weeks_back": {"weeks_ahead": 1},
    "weeks_ahead": {"weeks_back": 0},
    "throttle_wait_seconds": {"task_timeout_minutes": 720},
    "task_timeout_minutes": {"throttle_wait_seconds": 0},
}


APP = {
    "tenant_id": "0a1b2c3d-1111-2222-3333-444455556666",
    "client_id": "0a1b2c3d-1111-2222-3333-444455556667",
}
# what makes a choice valid on its own: the settings it needs beside it
CHOICE_COMPANIONS = {
    ("auth_method", "oauth"): APP,
    ("api", "graph"): {"auth_method": "oauth", **APP, "host": "https://graph.microsoft.com"},
}


def settings_accept(extra: dict) -> bool:
    extra = dict(extra)
    host = extra.pop("host", "mail.example.com")
    conn = SimpleNamespace(
        conn_id="ews_form", conn_type="ews", host=host, login="alice@example.com",
        password="pw", description=None, port=None, schema=None,  # noqa: S106
        extra=json.dumps({"app_user": "alice", **extra}),
    )  # fmt: skip
    try:
        SyncSettings.from_connection(conn)
    except SettingsError:
        return False
    return True


def form_accepts(extra: dict) -> bool:
    """What the form lets through: every field's schema, the required ones present."""
    schema = {
        "type": "object",
        "properties": {key: field["schema"] for key, field in FIELDS.items()},
        "required": [key for key, field in FIELDS.items() if "null" not in field["schema"]["type"]],
    }
    return jsonschema.Draft202012Validator(schema).is_valid({"app_user": "alice", **extra})


def test_every_setting_has_a_field_with_its_default():
    assert list(FIELDS) == list(EXTRA_FIELDS)
    for key, (default, _kind) in EXTRA_FIELDS.items():
        assert FIELDS[key]["schema"].get("default") == default
        assert form_accepts({}) and settings_accept({})


@pytest.mark.parametrize("key", sorted(INT_RANGES))
def test_number_bounds_are_settings_bounds(key):
    schema = FIELDS[key]["schema"]
    low, high = schema["minimum"], schema["maximum"]
    companion = COMPANIONS.get(key, {})
    for value in (low, high):
        assert settings_accept({key: value, **companion}), value
    for value in (low - 1, high + 1):
        assert not settings_accept({key: value, **companion}), value
        assert not form_accepts({key: value})


@pytest.mark.parametrize("key", [key for key in FIELDS if "enum" in FIELDS[key]["schema"]])
def test_every_choice_is_accepted_and_nothing_else(key):
    choices = FIELDS[key]["schema"]["enum"]
    assert choices
    for value in choices:
        assert settings_accept({key: value, **CHOICE_COMPANIONS.get((key, value), {})}), value
    for wrong in ("Mars/Olympus", "kerberos", "loser_wins"):
        assert not settings_accept({key: wrong}) and not form_accepts({key: wrong})


def test_required_fields_are_the_ones_settings_require():
    required = [key for key, field in FIELDS.items() if "null" not in field["schema"]["type"]]
    assert required == list(REQUIRED_EXTRA) == ["app_user"]
    assert not settings_accept({"app_user": None})
    assert not form_accepts({"app_user": None})
    # every other field may stay empty: its default (or a value from another field) serves
    assert settings_accept(dict.fromkeys((k for k in FIELDS if k not in required), None))


@pytest.mark.parametrize(
    "extra",
    [
        {"weeks_back": 200},
        {"exchange_timezone": "Mars/Olympus"},
        {"app_user": None},
        {"auth_method": "kerberos"},
        {"conflict_policy": "loudest_wins"},
        {"timeout_seconds": 0},
        {"alarm_minutes": "soon"},
        {"activated": "maybe"},
    ],
)
def test_what_the_issue_saved_is_refused_by_the_form_and_by_settings(extra):
    assert not form_accepts(extra)
    assert not settings_accept(extra)


def test_zone_choices_cover_iana_and_windows_names():
    zones = FIELDS["exchange_timezone"]["schema"]["enum"]
    assert {"Europe/Berlin", "UTC", "W. Europe Standard Time", "Tokyo Standard Time"} <= set(zones)
    assert len(zones) == len(set(zones)) > 400
