"""The Exchange side behind one small interface (``base.ExchangeCalendar``); EWS through
exchangelib (``ews``, its adaptations in ``ews_patches``), Microsoft Graph through plain HTTP
(``graph``). The connection's ``api`` setting picks one. Only the EWS backend and hook.py import
exchangelib."""

from __future__ import annotations

from ewssync.exchange.base import (
    CONFLICT,
    GENERAL,
    MAX_BATCH,
    NOT_FOUND,
    REFUSED,
    SEND_RECEIVE,
    AppointmentWrite,
    ConnectionReport,
    ExchangeCalendar,
    ItemUpdate,
    OccurrenceRef,
    OccurrenceUpdate,
    Recurrence,
    ReportPart,
    StampedItem,
    WriteResult,
)
from ewssync.exchange.redact import SECRET_FILTER
from ewssync.settings import SyncSettings

__all__ = [
    "CONFLICT",
    "GENERAL",
    "MAX_BATCH",
    "NOT_FOUND",
    "REFUSED",
    "SECRET_FILTER",
    "SEND_RECEIVE",
    "AppointmentWrite",
    "ConnectionReport",
    "ExchangeCalendar",
    "ItemUpdate",
    "OccurrenceRef",
    "OccurrenceUpdate",
    "Recurrence",
    "ReportPart",
    "StampedItem",
    "WriteResult",
    "open_calendar",
]


def open_calendar(settings: SyncSettings, **options) -> ExchangeCalendar:
    """The calendar of the connection's mailbox, through the connection's API (nothing sent yet)."""
    if settings.api == "graph":
        from ewssync.exchange.graph import GraphCalendar

        return GraphCalendar(settings, **options)
    from ewssync.exchange.ews import EwsCalendar

    return EwsCalendar(settings, **options)
