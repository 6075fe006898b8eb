"""The project's exception types: one per kind of failure, each with an actionable message."""

from __future__ import annotations


class EwsSyncError(Exception):
    """Base class of every error ewssync raises on purpose."""


class SettingsError(EwsSyncError):
    """A connection's settings are invalid; the message names the connection and each invalid
    field (``problems``: every (field, problem), in form order; ``field``: the first)."""

    def __init__(self, conn_id: str, field: str, problem: str):
        self.conn_id = conn_id
        self.field = field
        self.problem = problem
        self.problems: list[tuple[str, str]] = [(field, problem)]
        super().__init__(f"connection {conn_id!r}: field {field!r}: {problem}")

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.problems]

    @classmethod
    def of_all(cls, errors: list[SettingsError]) -> SettingsError:
        """One error reporting every invalid field of a connection at once."""
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        combined = cls(first.conn_id, first.field, first.problem)
        combined.problems = [problem for error in errors for problem in error.problems]
        lines = "\n".join(f"field {field!r}: {problem}" for field, problem in combined.problems)
        combined.args = (
            f"connection {first.conn_id!r}: {len(combined.problems)} settings are invalid:\n"
            f"{lines}",
        )
        return combined


class ConnectionTestError(EwsSyncError):
    """The connection test failed; carries the two-part report."""

    def __init__(self, conn_id: str, report):
        self.conn_id = conn_id
        self.report = report
        super().__init__(f"connection {conn_id!r}: connection test failed\n{report}")


class ExchangeError(EwsSyncError):
    """Exchange answered with an error we cannot work around in this run."""


class SyncStateExpired(ExchangeError):
    """Exchange no longer accepts the saved SyncFolderItems state (expired, or another mailbox)."""


class StoreError(EwsSyncError):
    """PostgreSQL side failure (schema, merge, missing user)."""


class SafetyStop(EwsSyncError):
    """A run stopped on purpose because it would do something unusual (e.g. mass deletion)."""


class RunInProgress(StoreError):
    """Another run of the same connection holds it; this one must wait (retry later)."""
