"""Parse-time discovery of `ews` connections from the environment, without their passwords."""

from __future__ import annotations

import json

import pytest

from ewssync.discovery import connections_from_env, explicit_conn_ids
from ewssync.errors import SettingsError
from ewssync.settings import SyncSettings


def test_env_connections_of_type_ews_are_found_and_their_password_is_not_read():
    environ = {
        "AIRFLOW_CONN_EWS_JSON": json.dumps(
            {
                "conn_type": "ews",
                "host": "mail.example.com",
                "login": "a@example.com",
                "password": "s3cret",
                "extra": {"app_user": "a", "weeks_back": 2},
            }
        ),  # fmt: skip
        "AIRFLOW_CONN_EWS_URI": "ews://b%40example.com:pw@mail.example.com/?app_user=b",
        "AIRFLOW_CONN_PG": "postgresql://u:p@db/calendar",
        "AIRFLOW_CONN_OTHER_JSON": json.dumps({"conn_type": "http", "host": "x"}),
        "AIRFLOW_CONN_BROKEN": "{not json",
        "SOMETHING_ELSE": "ews://x",
    }
    found = connections_from_env(environ)
    assert sorted(found) == ["ews_json", "ews_uri"]
    assert all(record.password is None for record in found.values())
    settings = SyncSettings.from_connection(found["ews_json"], require_password=False)
    assert (settings.weeks_back, settings.app_user, settings.mailbox) == (2, "a", "a@example.com")
    uri = SyncSettings.from_connection(found["ews_uri"], require_password=False)
    assert (uri.username, uri.app_user) == ("b@example.com", "b")
    with pytest.raises(SettingsError, match="'password'"):
        SyncSettings.from_connection(found["ews_json"])


def test_explicit_ids_for_secrets_backends():
    assert explicit_conn_ids({"EWSSYNC_CONN_IDS": " ews_a, ews_b ,,"}) == {"ews_a", "ews_b"}
    assert explicit_conn_ids({}) == set()
