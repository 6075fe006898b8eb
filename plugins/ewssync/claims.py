"""One connection per mailbox and app user: the claim a connection's check takes, and who holds it.

Two `ews` connections for the same mailbox on the same server (for Exchange Online: in the same
cloud, through EWS or Graph) and the same app user would each import every appointment (each
keeps its own links), doubling the calendar. The first connection
whose check reaches the mailbox claims (server, mailbox, app user) in the calendar database
(``ewssync.mailbox_claims``); a second one is refused, naming the first, unless it sets
``allow_duplicate_mailbox``. The claim lives in Postgres, not in a listing of connections, so it
works wherever the tasks run and with any secrets backend. A holder that no longer exists
(deleted, renamed) or whose settings now name another mailbox, server or app user releases it:
the next check asks Airflow for the holder (``Connection.get``) and takes the claim over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ewssync.errors import SettingsError
from ewssync.settings import SyncSettings

log = logging.getLogger(__name__)

# conn_id -> the connection (anything SyncSettings.from_connection reads), or None when no such
# connection exists
ConnectionLookup = Callable[[str], Any]


# Exchange Online answers the same mailbox through EWS and through Graph, on other hosts: a
# connection moved to api=graph (or a second one beside it) names the same mailbox. Host -> the
# Exchange Online cloud it belongs to (EWS hosts, then Graph hosts).
EXCHANGE_ONLINE = {
    "outlook.office365.com": "global", "outlook.office.com": "global",
    "graph.microsoft.com": "global",
    "outlook.office365.us": "usgov", "graph.microsoft.us": "usgov",
    "webmail.apps.mil": "usgov-dod", "dod-graph.microsoft.us": "usgov-dod",
    "partner.outlook.cn": "china", "microsoftgraph.chinacloudapi.cn": "china",
}  # fmt: skip


def mailbox_key(settings: SyncSettings) -> tuple[str, str]:
    """(server, mailbox) as claimed, case-insensitive: the EWS endpoint, or for Exchange Online
    its cloud (``exchange-online:global``) whichever API and host the connection uses."""
    host = (urlsplit(settings.service_endpoint).hostname or "").lower()
    cloud = EXCHANGE_ONLINE.get(host)
    server = f"exchange-online:{cloud}" if cloud else settings.service_endpoint.lower()
    return server, settings.mailbox.lower()


def airflow_connection(conn_id: str) -> Any:
    """The connection from Airflow (the task's own route to connections), or None if none."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def holder_still_holds(
    conn, holder: str, settings: SyncSettings, user_id: int, lookup: ConnectionLookup
) -> bool:
    """Whether ``holder`` still exists and still names this server, mailbox and app user."""
    from ewssync import store

    found = lookup(holder)
    if found is None:
        return False
    try:
        theirs = SyncSettings.from_connection(found, require_password=False)
    except SettingsError:
        # its settings are broken now: it cannot run, but once fixed it would sync the mailbox
        # again, so it keeps the claim rather than letting a duplicate in
        return True
    if mailbox_key(theirs) != mailbox_key(settings):
        return False
    their_user = store.find_user(conn, theirs.app_user)
    return their_user is not None and their_user["id"] == user_id


def duplicate_message(settings: SyncSettings, holder: str) -> str:
    return (
        f"the mailbox {settings.mailbox!r} on {settings.service_endpoint} is already synced for "
        f"app user {settings.app_user!r} by connection {holder!r}; a second connection would "
        "import every appointment again (each one twice in the app). Delete one of the two "
        "connections, point this one at another mailbox or app user, or set "
        "allow_duplicate_mailbox=true on this connection if the duplicate is intended"
    )


def claim_mailbox(
    conn, settings: SyncSettings, user_id: int, lookup: ConnectionLookup = airflow_connection
) -> str:
    """Claim the connection's (server, mailbox, app user) in the caller's transaction.

    :return: the connection holding the claim afterwards (``settings.conn_id`` unless another
        connection holds it and ``allow_duplicate_mailbox`` is set).
    :raises SettingsError: field ``mailbox``, naming the connection that holds the claim.
    """
    from ewssync import store

    server, mailbox = mailbox_key(settings)
    conn_id = settings.conn_id
    for _ in range(3):
        holder = store.claim_mailbox(conn, conn_id, server, mailbox, user_id)
        if holder == conn_id:
            break
        if holder_still_holds(conn, holder, settings, user_id, lookup):
            if not settings.allow_duplicate_mailbox:
                raise SettingsError(conn_id, "mailbox", duplicate_message(settings, holder))
            log.warning(
                "connection %s: %s is also synced by connection %s for the same app user "
                "(allow_duplicate_mailbox is set: every appointment arrives twice)",
                conn_id,
                mailbox,
                holder,
            )
            return holder
        if store.take_over_mailbox(conn, conn_id, holder, server, mailbox, user_id):
            log.info(
                "connection %s: takes over the claim on %s from connection %s (gone, or it "
                "names another mailbox or app user now)",
                conn_id,
                mailbox,
                holder,
            )
            break
    else:  # pragma: no cover - three holders changing within one check
        raise SettingsError(conn_id, "mailbox", f"the claim on {mailbox!r} keeps changing hands")
    store.release_other_claims(conn, conn_id, server, mailbox, user_id)
    return conn_id


def other_holder(
    conn, settings: SyncSettings, user_id: int, lookup: ConnectionLookup = airflow_connection
) -> str | None:
    """The other connection that holds this mailbox for this app user (read only), or None."""
    from ewssync import store

    server, mailbox = mailbox_key(settings)
    holder = store.mailbox_holder(conn, server, mailbox, user_id)
    if holder in (None, settings.conn_id) or settings.allow_duplicate_mailbox:
        return None
    return holder if holder_still_holds(conn, holder, settings, user_id, lookup) else None
