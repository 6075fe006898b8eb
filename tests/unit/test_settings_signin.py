"""The sign-in settings: auth_method, tenant_id, client_id, authority."""

from __future__ import annotations

import pytest

from ewssync.errors import SettingsError
from ewssync.settings import AUTHORITIES
from tests.unit.test_settings import PASSWORD, parse

TENANT = "3b13a9d2-946e-44c7-a21a-6474f708a2aa"
CLIENT = "e135b5b9-0709-436d-a9d7-a993039263e5"
OAUTH = {"auth_method": "oauth", "tenant_id": TENANT, "client_id": CLIENT}


def test_defaults_keep_basic():
    settings = parse()
    assert settings.auth_method == "basic"
    assert settings.tenant_id is None and settings.client_id is None
    assert settings.authority == "https://login.microsoftonline.com"


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ({"auth_method": "NTLM"}, "auth_method", "ntlm"),
        ({"auth_method": " auto "}, "auth_method", "auto"),
        ({"auth_method": ""}, "auth_method", "basic"),
        (OAUTH, "auth_method", "oauth"),
        ({**OAUTH, "tenant_id": "Contoso.onmicrosoft.com"}, "tenant_id", "contoso.onmicrosoft.com"),
        ({**OAUTH, "client_id": CLIENT.upper()}, "client_id", CLIENT),
        ({**OAUTH, "authority": "usgov"}, "authority", AUTHORITIES["usgov"]),
        ({**OAUTH, "authority": "China"}, "authority", "https://login.partner.microsoftonline.cn"),
        ({**OAUTH, "authority": "https://login.example.test/"}, "authority",
         "https://login.example.test"),
        ({**OAUTH, "authority": "https://127.0.0.1:8443"}, "authority", "https://127.0.0.1:8443"),
        ({"auth_method": "auto"}, "tenant_id", None),
    ],
)  # fmt: skip
def test_valid(extra, key, expected):
    assert getattr(parse(extra), key) == expected


@pytest.mark.parametrize(
    ("extra", "overrides", "field", "says"),
    [
        ({"auth_method": "kerberos"}, {}, "auth_method", "basic, ntlm, oauth, auto"),
        ({"auth_method": "oath"}, {}, "auth_method", "did you mean 'oauth'"),
        ({"auth_method": "oauth", "client_id": CLIENT}, {}, "tenant_id", "Directory (tenant) ID"),
        ({"auth_method": "oauth", "tenant_id": TENANT}, {}, "client_id", "Application (client)"),
        ({"auth_method": "auto", "tenant_id": TENANT}, {}, "client_id", "needs"),
        ({**OAUTH, "client_id": "my-app"}, {}, "client_id", "GUID"),
        ({**OAUTH, "tenant_id": "contoso"}, {}, "tenant_id", "onmicrosoft.com"),
        ({**OAUTH, "authority": "http://login.example.test"}, {}, "authority", "https URL"),
        ({**OAUTH, "authority": "http://127.0.0.1:8443"}, {}, "authority", "https URL"),
        ({**OAUTH, "authority": "https://login.microsoftonline.com/tenant"}, {}, "authority",
         "without a path"),
        ({**OAUTH, "authority": "germany"}, {}, "authority", "global, usgov, china"),
        (OAUTH, {"password": ""}, "password", "client secret"),
    ],
)  # fmt: skip
def test_invalid(extra, overrides, field, says):
    with pytest.raises(SettingsError) as caught:
        parse(extra, **overrides)
    assert caught.value.field == field
    assert says in str(caught.value)


def test_oauth_needs_no_user_name_but_a_mailbox():
    settings = parse({**OAUTH, "mailbox": "alice@example.com"}, login="")
    assert settings.username == "" and settings.mailbox == "alice@example.com"
    with pytest.raises(SettingsError) as caught:
        parse(OAUTH, login="")
    assert caught.value.field == "mailbox"


def test_client_secret_stays_out_of_public_dict_and_repr():
    settings = parse(OAUTH)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.public_dict())
    assert settings.public_dict()["client_id"] == CLIENT
