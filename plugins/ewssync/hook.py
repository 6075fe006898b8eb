"""EwsHook: the `ews` connection type, its form in the Airflow UI, and the connection test."""

from __future__ import annotations

from typing import Any

try:
    from airflow.sdk import BaseHook
except ImportError:  # pragma: no cover - Airflow 2 layout
    from airflow.hooks.base import BaseHook

from ewssync.settings import EXTRA_FIELDS, FIELD_HELP, UI_FIELD_BEHAVIOUR, SyncSettings


class EwsHook(BaseHook):
    """Reach one Exchange mailbox's calendar over EWS.

    :param ews_conn_id: the Airflow connection id (type `ews`).
    """

    conn_name_attr = "ews_conn_id"
    default_conn_name = "ews_default"
    conn_type = "ews"
    hook_name = "Exchange calendar (EWS)"

    def __init__(self, ews_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ews_conn_id = ews_conn_id
        self._settings: SyncSettings | None = None

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form, one per sync setting.

        Airflow 3's UI reads them from the provider info's ``conn-fields``; this wtforms form is
        for installations that still run the FAB-based UI.
        """
        try:
            from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
            from flask_babel import lazy_gettext
            from wtforms import BooleanField, IntegerField, StringField
        except ImportError:
            return {}

        widgets: dict[str, Any] = {}
        for key, (default, kind) in EXTRA_FIELDS.items():
            label, help_text = FIELD_HELP[key]
            if kind == "bool":
                widgets[key] = BooleanField(
                    lazy_gettext(label), default=default, description=help_text
                )
            elif kind == "int":
                widgets[key] = IntegerField(
                    lazy_gettext(label),
                    default=default,
                    description=help_text,
                    widget=BS3TextFieldWidget(),
                )
            else:
                widgets[key] = StringField(
                    lazy_gettext(label),
                    default=default,
                    description=help_text,
                    widget=BS3TextFieldWidget(),
                )
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel the standard fields; hide those an EWS connection does not use."""
        return UI_FIELD_BEHAVIOUR

    def get_settings(self) -> SyncSettings:
        if self._settings is None:
            self._settings = SyncSettings.from_connection(self.get_connection(self.ews_conn_id))
        return self._settings

    def get_conn(self):
        """The connection's calendar (ewssync.exchange.EwsCalendar)."""
        from ewssync.exchange import open_calendar

        return open_calendar(self.get_settings())

    def test_connection(self) -> tuple[bool, str]:
        """The two-part connection test, for the UI/API Test button and `airflow connections test`."""
        try:
            report = self.get_conn().test()
        except Exception as exc:  # invalid settings: say which field
            return False, str(exc)
        return report.ok, str(report)
