"""Throttling as Exchange answers it, in its three documented forms (see README.md)."""

from __future__ import annotations

from email.utils import formatdate

from lxml import etree

S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"

THROTTLING_KINDS = {"server_busy", "http503", "busy_in_message"}
BUSY_TEXT = "The server cannot service this request right now. Try again later."

# The container an error ResponseMessage must still carry (the schema requires it).
_EMPTY_CONTAINER = {
    "GetItem": "<m:Items/>",
    "CreateItem": "<m:Items/>",
    "UpdateItem": "<m:Items/>",
    "GetFolder": "<m:Folders/>",
    # as with ErrorInvalidSyncStateData: Exchange sends an empty state (exchangelib reads it)
    "SyncFolderItems": "<m:SyncState/><m:IncludesLastItemInRange>true</m:IncludesLastItemInRange>",
}
# Children of these request elements each get one ResponseMessage.
_PER_ITEM = ("m:ItemIds", "m:Items", "m:ItemChanges", "m:FolderIds")


def server_busy_fault(back_off_ms: int) -> bytes:
    """HTTP 500, SOAP fault ErrorServerBusy with BackOffMilliseconds in its MessageXml."""
    return (
        f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{S}"><s:Body><s:Fault>'
        f'<faultcode xmlns:a="{T}">a:ErrorServerBusy</faultcode>'
        f'<faultstring xml:lang="en-US">{BUSY_TEXT}</faultstring><detail>'
        f'<e:ResponseCode xmlns:e="{E}">ErrorServerBusy</e:ResponseCode>'
        f'<e:Message xmlns:e="{E}">{BUSY_TEXT}</e:Message>'
        f'<t:MessageXml xmlns:t="{T}"><t:Value Name="BackOffMilliseconds">{int(back_off_ms)}'
        "</t:Value></t:MessageXml></detail></s:Fault></s:Body></s:Envelope>"
    ).encode()


def retry_after_header(retry_after) -> str | None:
    """Retry-After as delta-seconds (a number) or as an HTTP-date ("date:<seconds>")."""
    if retry_after is None:
        return None
    if isinstance(retry_after, str) and retry_after.startswith("date:"):
        import time

        return formatdate(time.time() + float(retry_after[5:]), usegmt=True)
    return str(int(retry_after))


def busy_in_messages(body: bytes, version_header: str, back_off_ms: int | None) -> bytes:
    """HTTP 200 whose every ResponseMessage is ErrorInternalServerError with the inner error
    ErrorServerBusy (and BackOffMilliseconds when given) in MessageXml, as Exchange Online
    answers a throttled request."""
    request = etree.fromstring(body).find(f"{{{S}}}Body")[0]
    operation = etree.QName(request).localname
    count = 1
    for path in _PER_ITEM:
        found = request.find(path, {"m": M})
        if found is not None:
            count = max(len(found), 1)
            break
    values = [
        f'<t:Value Name="InnerErrorMessageText">{BUSY_TEXT}</t:Value>',
        '<t:Value Name="InnerErrorResponseCode">ErrorServerBusy</t:Value>',
        '<t:Value Name="InnerErrorDescriptiveLinkKey">0</t:Value>',
    ]
    if back_off_ms is not None:
        values.append(f'<t:Value Name="BackOffMilliseconds">{int(back_off_ms)}</t:Value>')
    message = (
        f'<m:{operation}ResponseMessage ResponseClass="Error"><m:MessageText>An internal server '
        f"error occurred. The operation failed., {BUSY_TEXT}</m:MessageText>"
        "<m:ResponseCode>ErrorInternalServerError</m:ResponseCode>"
        f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:MessageXml>{''.join(values)}"
        f"</m:MessageXml>{_EMPTY_CONTAINER.get(operation, '')}</m:{operation}ResponseMessage>"
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{S}" xmlns:m="{M}" xmlns:t="{T}"><s:Header>'
        f"<t:ServerVersionInfo {version_header}/></s:Header><s:Body>"
        f"<m:{operation}Response><m:ResponseMessages>{message * count}</m:ResponseMessages>"
        f"</m:{operation}Response></s:Body></s:Envelope>"
    ).encode()
