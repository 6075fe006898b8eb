"""Which connections name the same mailbox (claims.mailbox_key): Exchange Online is one server
whether a connection reads it through EWS or Graph."""

from __future__ import annotations

import json
from types import SimpleNamespace

from ewssync.claims import mailbox_key
from ewssync.settings import SyncSettings

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "0a1b2c3d-1111-2222-3333-444455556666"


def settings(host: str, login: str = "Alice@Contoso.com", **extra) -> SyncSettings:
    extra = {"app_user": "alice", **extra}
    conn = SimpleNamespace(
        conn_id="c", conn_type="ews", host=host, login=login, password="x" * 12,
        description="", port=None, schema=None, extra=json.dumps(extra),
    )  # fmt: skip
    return SyncSettings.from_connection(conn)


def app_only(host: str, **extra) -> SyncSettings:
    oauth = {"auth_method": "oauth", "tenant_id": TENANT, "client_id": CLIENT,
             "mailbox": "alice@contoso.com"}  # fmt: skip
    return settings(host, login="", **oauth, **extra)


def test_exchange_online_through_ews_or_graph_is_one_server():
    ews = mailbox_key(settings("outlook.office365.com"))
    assert ews == ("exchange-online:global", "alice@contoso.com")
    assert mailbox_key(app_only("outlook.office365.com")) == ews
    assert mailbox_key(app_only("graph.microsoft.com", api="graph")) == ews
    assert mailbox_key(app_only("https://graph.microsoft.com/v1.0", api="graph")) == ews


def test_clouds_and_on_premises_servers_stay_apart():
    usgov = mailbox_key(app_only("graph.microsoft.us", api="graph", authority="usgov"))
    assert usgov == ("exchange-online:usgov", "alice@contoso.com")
    assert usgov == mailbox_key(settings("outlook.office365.us"))
    on_prem = mailbox_key(settings("mail.contoso.com"))
    assert on_prem == ("https://mail.contoso.com/ews/exchange.asmx", "alice@contoso.com")
    assert on_prem != mailbox_key(settings("mail2.contoso.com"))
    assert on_prem != mailbox_key(settings("outlook.office365.com"))
