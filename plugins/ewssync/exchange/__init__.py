"""The Exchange side behind one small interface (``base.ExchangeCalendar``); EWS through
exchangelib (``ews``, its adaptations in ``ews_patches``). Only the EWS backend and hook.py import
exchangelib."""

from __future__ import annotations

from ewssync.exchange.base import (
    GENERAL,
    SEND_RECEIVE,
    ConnectionReport,
    ExchangeCalendar,
    ReportPart,
)
from ewssync.exchange.redact import SECRET_FILTER
from ewssync.settings import SyncSettings

__all__ = [
    "GENERAL",
    "SECRET_FILTER",
    "SEND_RECEIVE",
    "ConnectionReport",
    "ExchangeCalendar",
    "ReportPart",
    "open_calendar",
]


def open_calendar(settings: SyncSettings, **options) -> ExchangeCalendar:
    """The calendar of the connection's mailbox, through the connection's API (nothing sent yet)."""
    from ewssync.exchange.ews import EwsCalendar

    return EwsCalendar(settings, **options)
