"""Airflow provider metadata: registers the `ews` connection type and its form fields."""

from __future__ import annotations

from typing import Any

from ewssync import __version__
from ewssync.settings import EXTRA_FIELDS, FIELD_HELP, UI_FIELD_BEHAVIOUR

_JSON_TYPES = {"bool": "boolean", "int": "integer"}


def conn_fields() -> dict[str, Any]:
    """The connection form's extra fields, declared as Airflow 3's UI reads them."""
    fields = {}
    for key, (default, kind) in EXTRA_FIELDS.items():
        label, help_text = FIELD_HELP[key]
        schema: dict[str, Any] = {"type": [_JSON_TYPES.get(kind, "string"), "null"]}
        if default is not None:
            schema["default"] = default
        fields[key] = {"label": label, "description": help_text, "schema": schema}
    return fields


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "ewssync",
        "name": "ewssync",
        "description": "Two-way sync between Exchange calendars (EWS) and PostgreSQL",
        "versions": [__version__],
        "hooks": [
            {"integration-name": "Exchange calendar (EWS)", "python-modules": ["ewssync.hook"]}
        ],
        "connection-types": [
            {
                "hook-class-name": "ewssync.hook.EwsHook",
                "hook-name": "Exchange calendar (EWS)",
                "connection-type": "ews",
                "conn-fields": conn_fields(),
                "ui-field-behaviour": {
                    "hidden-fields": UI_FIELD_BEHAVIOUR["hidden_fields"],
                    "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
                    "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
                },
            }
        ],
    }
