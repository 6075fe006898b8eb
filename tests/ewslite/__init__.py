"""A compact EWS server for the pipeline's tests: real SOAP over HTTP, the operations the
pipeline uses (GetFolder, FindItem/CalendarView, GetItem, SyncFolderItems, CreateItem,
DeleteItem), server-side recurrence expansion, and a control API to edit mailboxes as a person
in Outlook would. Same control API as tests.ewssim's contract."""

from tests.ewslite.server import EwsSimulator

__all__ = ["EwsSimulator"]
