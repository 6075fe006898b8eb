"""EwsHook: the `ews` connection type, its form in the Airflow UI, and the connection test."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from ewssync.errors import EwsSyncError
from ewssync.provider_info import HOOK_NAME, UI_FIELD_BEHAVIOUR
from ewssync.settings import EXTRA_FIELDS, FIELD_DOCS, SyncSettings

if TYPE_CHECKING:
    from ewssync.exchange import ConnectionReport, ExchangeCalendar


class EwsHook(BaseHook):
    """Reach one Exchange mailbox's calendar over EWS.

    :param ews_conn_id: the Airflow connection id (type `ews`).
    """

    conn_name_attr = "ews_conn_id"
    default_conn_name = "ews_default"
    conn_type = "ews"
    hook_name = HOOK_NAME

    def __init__(self, ews_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ews_conn_id = ews_conn_id
        self._settings: SyncSettings | None = None

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form, one per sync setting.

        Airflow 3.2+ takes the form from provider_info's "conn-fields" and does not call this;
        it is kept for tools that still ask the hook (needs wtforms and flask-appbuilder).
        """
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, IntegerField, StringField

        widgets: dict[str, Any] = {}
        for key, (default, kind) in EXTRA_FIELDS.items():
            label, help_text = FIELD_DOCS[key]
            if kind == "bool":
                widgets[key] = BooleanField(
                    lazy_gettext(label), default=default, description=help_text
                )
            else:
                field_class = IntegerField if kind == "int" else StringField
                widgets[key] = field_class(
                    lazy_gettext(label),
                    default=default,
                    description=help_text,
                    widget=BS3TextFieldWidget(),
                )
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel the standard fields; hide those an EWS connection does not use."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    def get_settings(self) -> SyncSettings:
        """The connection's settings, parsed and validated once.

        :raises SettingsError: naming the connection and the invalid field.
        """
        if self._settings is None:
            self._settings = SyncSettings.from_connection(self.get_connection(self.ews_conn_id))
        return self._settings

    def get_calendar(self) -> ExchangeCalendar:
        """The connection's calendar (nothing is sent until it is used)."""
        from ewssync.exchange import open_calendar

        return open_calendar(self.get_settings())

    def get_conn(self) -> ExchangeCalendar:
        """Same as get_calendar(), under the name Airflow's hooks share."""
        return self.get_calendar()

    def run_test(self, write: bool | None = None) -> ConnectionReport:
        """The two-part connection test as a report (write defaults to the test_write setting)."""
        settings = self.get_settings()
        return self.get_calendar().test(settings.test_write if write is None else write)

    def test_connection(self) -> tuple[bool, str]:
        """The connection test, for the UI/API Test button and `airflow connections test`."""
        try:
            report = self.run_test()
        except EwsSyncError as exc:  # invalid settings: the message names the field
            return False, str(exc)
        if report.ok:
            holder = self.mailbox_held_by()
            if holder is not None:
                from ewssync.claims import duplicate_message
                from ewssync.exchange.base import ReportPart

                message = duplicate_message(self.get_settings(), holder)
                report.parts.append(ReportPart(MAILBOX_PART, False, message))
        if _in_connections_test_command():
            # The command prints only "Connection success!" (the message only on failure) and
            # logs below WARNING are not shown there: print both parts of the report first.
            print(report, flush=True)
        return report.ok, str(report)

    def mailbox_held_by(self) -> str | None:
        """The other connection already syncing this mailbox for the same app user (the claim
        its check took in the calendar database), or None: none, or it cannot be told here.

        The UI's Test button tests the form's values under a temporary connection id, so the
        holder tested from its own form shows up as "another" connection; it is recognised by
        having the same server, user name and extra settings.
        """
        from ewssync import claims, pipeline, store

        settings = self.get_settings()
        try:
            with store.connect(pipeline.calendar_dsn()) as conn:
                user = store.find_user(conn, settings.app_user)
                if user is None:
                    return None
                holder = claims.other_holder(conn, settings, user["id"])
                if holder is None:
                    return None
        except Exception as exc:  # no calendar database here, or not migrated yet
            self.log.info("ewssync: the mailbox claims could not be read: %s", exc)
            return None
        tested = self.get_connection(self.ews_conn_id)
        if _same_fields(claims.airflow_connection(holder), tested):
            return None
        return holder


MAILBOX_PART = "One connection per mailbox"


def _same_fields(one: Any, other: Any) -> bool:
    """Whether two connections are the same apart from their ids (and passwords)."""
    if one is None or other is None:
        return False
    return (
        (one.host or "").strip() == (other.host or "").strip()
        and (one.login or "").strip() == (other.login or "").strip()
        and one.extra_dejson == other.extra_dejson
    )


def _in_connections_test_command() -> bool:
    return Path(sys.argv[0]).name == "airflow" and sys.argv[1:3] == ["connections", "test"]
