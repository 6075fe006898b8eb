"""Run the simulator standalone: prints its URL on one line, serves until killed.

python -m tests.ewssim --port 8765 --seed tests/ewssim/fixtures/realistic.json \
    --user demo@example.com --password demo [--shift-to-today] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from tests.ewssim import EwsSimulator
from tests.simserver import wait_for_sigterm


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", help="fixture JSON with mailboxes and items")
    parser.add_argument("--user", default="demo@example.com")
    parser.add_argument("--password", default="demo")
    parser.add_argument(
        "--dialect", default="Exchange2016", choices=["Exchange2016", "Exchange2007_SP1"]
    )
    parser.add_argument("--shift-to-today", action="store_true")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    simulator = EwsSimulator(dialect=args.dialect, latency=args.latency)
    simulator.add_mailbox(args.user, password=args.password)
    if args.seed:
        shift_to = datetime.now(UTC).date() if args.shift_to_today else None
        simulator.load_fixture(args.seed, shift_to=shift_to, default_mailbox=args.user)
    simulator.start(port=args.port, host=args.host)
    print(simulator.url, flush=True)
    wait_for_sigterm()
    simulator.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
