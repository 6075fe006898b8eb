"""Run the Graph simulator standalone, with its identity platform: prints one JSON line (Graph's
URL, the authority, tenant id, client id and secret of an app granted Calendars.ReadWrite), then
serves until killed.

python -m tests.graphsim --seed tests/ewssim/fixtures/realistic.json --user demo@example.com \
    [--shift-to-today] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from tests.ewssim import EwsSimulator
from tests.graphsim import GraphSimulator
from tests.identitysim import IdentitySimulator
from tests.simserver import wait_for_sigterm

RESOURCE = "https://127.0.0.1"  # Graph on this machine: the token's audience is its host


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", help="fixture JSON with mailboxes and items")
    parser.add_argument("--user", default="demo@example.com")
    parser.add_argument("--shift-to-today", action="store_true")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    mailboxes = EwsSimulator()  # the mailbox model only
    mailboxes.add_mailbox(args.user, password="unused")
    if args.seed:
        shift_to = datetime.now(UTC).date() if args.shift_to_today else None
        mailboxes.load_fixture(args.seed, shift_to=shift_to, default_mailbox=args.user)
    identity = IdentitySimulator(tls=True).start(host=args.host)  # msal wants https
    identity.add_resource(RESOURCE, ["Calendars.ReadWrite"])
    app = identity.add_app(roles={RESOURCE: ["Calendars.ReadWrite"]})
    graph = GraphSimulator(source=mailboxes, latency=args.latency)
    graph.trust(identity)
    graph.start(port=args.port, host=args.host)
    print(
        json.dumps({
            "url": graph.url, "authority": identity.authority, "tenant_id": app.tenant_id,
            "client_id": app.client_id, "secret": app.secret,
        }),
        flush=True,
    )  # fmt: skip
    wait_for_sigterm()
    graph.stop()
    identity.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
