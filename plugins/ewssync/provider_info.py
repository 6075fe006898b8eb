"""Airflow provider metadata: registers the `ews` connection type and describes its form."""

from __future__ import annotations

from typing import Any

import ewssync
from ewssync.settings import (
    EXTRA_FIELDS,
    FIELD_DOCS,
    FORM_EXAMPLES,
    INT_RANGES,
    REQUIRED_EXTRA,
    allowed_values,
)

HOOK_CLASS = "ewssync.hook.EwsHook"
HOOK_NAME = "Exchange calendar (EWS)"

# Airflow 3.2+ reads the form from here ("conn-fields", "ui-field-behaviour") without importing
# the hook; the hook's get_ui_field_behaviour() returns the same behaviour for older callers.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {
        "host": "Server",
        "login": "User name",
        "password": "Password",
        "description": "Title",
    },
    "placeholders": {
        "host": "outlook.office365.com, https://mail.example.com/EWS/Exchange.asmx, or "
        "graph.microsoft.com with api graph",
        "login": "technician@example.com (or DOMAIN\\user)",
        "description": "Calendar of the technician",
        "app_user": "login in calendar.users",
        "mailbox": "technician@example.com",
        "exchange_timezone": "Europe/Berlin",
        "schedule": "*/30 * * * *",
        "tenant_id": "Directory (tenant) ID, e.g. 3b13a9d2-946e-44c7-a21a-6474f708a2aa",
        "client_id": "Application (client) ID",
        "authority": "global (or usgov, china)",
    },
}

_JSON_TYPES = {"bool": "boolean", "int": "integer"}


def field_schema(key: str) -> dict[str, Any]:
    """One extra setting's JSON schema, from SyncSettings' own limits (never restated here).

    Airflow 3.3's form enforces: a type without "null" (required: Save stays disabled while
    empty), minimum/maximum (the number input's bounds), enum (a select). It ignores "pattern",
    so e-mail addresses, GUIDs, cron expressions and URLs are checked by SyncSettings only.
    """
    default, kind = EXTRA_FIELDS[key]
    json_type = _JSON_TYPES.get(kind, "string")
    schema: dict[str, Any] = {"type": json_type if key in REQUIRED_EXTRA else [json_type, "null"]}
    if default is not None:
        schema["default"] = default
    if key in INT_RANGES:
        schema["minimum"], schema["maximum"] = INT_RANGES[key]
    choices = allowed_values(kind)
    if choices is not None:
        schema["enum"] = list(choices)
    if key in FORM_EXAMPLES:
        schema["examples"] = list(FORM_EXAMPLES[key])
    return schema


def conn_fields() -> dict[str, dict[str, Any]]:
    """The extra settings as Airflow's declarative connection fields (JSON schema per field)."""
    fields: dict[str, dict[str, Any]] = {}
    for key in EXTRA_FIELDS:
        label, help_text = FIELD_DOCS[key]
        fields[key] = {"label": label, "description": help_text, "schema": field_schema(key)}
    return fields


def get_provider_info() -> dict[str, Any]:
    """The provider's metadata, found by Airflow through the `apache_airflow_provider` entry point."""
    return {
        "package-name": "ewssync",
        "name": "ewssync",
        "description": "Two-way sync between Exchange calendars (EWS) and PostgreSQL.",
        "versions": [ewssync.__version__],
        "hooks": [{"integration-name": "Exchange calendar", "python-modules": ["ewssync.hook"]}],
        "connection-types": [
            {
                "hook-class-name": HOOK_CLASS,
                "hook-name": HOOK_NAME,
                "connection-type": "ews",
                "conn-fields": conn_fields(),
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
