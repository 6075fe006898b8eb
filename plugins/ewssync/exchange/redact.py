"""Never log a secret: a logging filter that blanks credentials before any handler sees them."""

from __future__ import annotations

import base64
import logging
import re

# exchangelib's DEBUG log dumps request headers, Authorization included. This filter sits on
# every exchangelib logger (and ours) and blanks credentials before any handler sees a record.

_AUTH_HEADER = re.compile(
    r"""(authorization['"]?\s*[:=]\s*['"]?)(basic|ntlm|negotiate|bearer)\s+[^'",}\s]+""",
    re.IGNORECASE,
)


class SecretFilter(logging.Filter):
    """Blank Authorization header values and known passwords (plain and base64) in log records."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, username: str, password: str) -> None:
        if not password:
            return
        self.secrets.add(password)
        self.secrets.add(base64.b64encode(f"{username}:{password}".encode()).decode())

    def add_secret(self, secret: str) -> None:
        """Blank this value wherever it appears (client secrets, access tokens)."""
        if secret and len(secret) >= 6:
            self.secrets.add(secret)
            # a PEM credential: blank its base64 lines too, wherever they turn up alone
            for line in secret.splitlines():
                if len(line) >= 32 and not line.startswith("-----"):
                    self.secrets.add(line)

    def scrub(self, text: str) -> str:
        text = _AUTH_HEADER.sub(r"\1\2 ***", text)
        for secret in self.secrets:
            if secret in text:
                # whole credentials only: a short password ("x") must not turn "expired" into
                # "e***pired"
                text = re.sub(rf"(?<!\w){re.escape(secret)}(?!\w)", "***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: leave it to logging's own error handling
            return True
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


SECRET_FILTER = SecretFilter()


def install_secret_filter() -> None:
    """Put the filter on every exchangelib logger that exists now (filters do not inherit:
    call again after importing exchangelib, whose modules create their loggers on import)."""
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name in ("exchangelib", "requests_oauthlib", "oauthlib", "spnego")
        or name.startswith(
            ("exchangelib.", "ewssync", "requests_oauthlib.", "oauthlib.", "spnego.")
        )
    ]  # requests_oauthlib logs the whole token at DEBUG ("Adding token {...}")
    for name in [
        *names,
        "exchangelib",
        "ewssync",
        "ewssync.exchange",
        "requests_ntlm",
        "urllib3.connectionpool",
    ]:
        logger = logging.getLogger(name)
        if SECRET_FILTER not in logger.filters:
            logger.addFilter(SECRET_FILTER)


install_secret_filter()
