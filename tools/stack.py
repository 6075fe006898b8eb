"""`make up` / `make down`: a real Airflow (CeleryExecutor) on this machine, from this project.

The same components as docker-compose.yaml, as local processes: api-server, scheduler,
dag-processor, triggerer and a Celery worker, with the Redis at 127.0.0.1:6379 as broker, the
metadata and the calendar database in the local PostgreSQL, plus the Exchange simulator with
the realistic demo mailbox. Several stacks may run on one machine at once (other worktrees,
test sessions): each picks free ports when it starts and has its own AIRFLOW_HOME, metadata
and calendar database names, Redis DB index, Redis key prefix, Celery queue and worker name.

    python -m tools.stack up [--dir .up]     # start; writes <dir>/env.sh and <dir>/state.json
    python -m tools.stack up --demo          # the same, on `make demo`'s calendar database,
                                             # with its mailbox and the connection ews_demo
    python -m tools.stack down [--dir .up]   # stop every process, drop the databases and keys
    python -m tools.stack status [--dir .up]

Tests use ``Stack.start(folder)`` / ``stack.stop()`` the same way.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO / ".up"
SERVER_DSN = os.environ.get("EWSSYNC_SERVER_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("EWSSYNC_REDIS_URL", "redis://127.0.0.1:6379")
FIXTURE = REPO / "tests" / "ewssim" / "fixtures" / "realistic.json"
SIM_MAILBOX = "demo@example.com"
ADMIN_USER = "admin"
API_ACCOUNT = "ewssync_discovery"
API_CONN_ID = "ewssync_airflow_api"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "celery-worker")
# [api] theme: the UI's toasts keep a message's line breaks, so the connection test's two parts
# (General connection / Send/receive data) show on two lines (Chakra collapses them otherwise).
UI_THEME = json.dumps(
    {"globalCss": {"[data-scope=toast][data-part=description]": {"whiteSpace": "pre-line"}}}
)


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def _die_with_parent() -> None:
    # Test stacks: the components die with the test process, even when it is killed.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def session_members(sessions: set[int], marker: bytes) -> list[int]:
    """The live processes of these sessions whose environment holds ``marker`` (``NAME=value``).

    Each stack process leads a session of its own (start_new_session), and whatever it starts
    stays in that session even when it takes a process group of its own, as Airflow's task
    supervisor does for each task; so a session holds all a component ever started. The marker
    (the stack's AIRFLOW_HOME) keeps a reused pid's session, after a reboot, out of reach."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            # after "(comm)": state, ppid, process group, session, ...
            state, _ppid, _group, session = stat[stat.rindex(")") + 2 :].split()[:4]
            if int(session) not in sessions or state in ("Z", "X"):
                continue
            if b"\0" + marker + b"\0" not in b"\0" + Path(entry.path, "environ").read_bytes():
                continue
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
        found.append(int(entry.name))
    return found


def signal_sessions(sessions: set[int], marker: bytes, signum: int) -> list[int]:
    """Send ``signum`` to every member of the sessions: each component's process group and the
    groups its children made (not killpg on the leader's pid: after a reboot that pid may lead
    someone else's group); return the members signalled."""
    members = session_members(sessions, marker)
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
    return members


# Stacks this process stops when it exits or is told to (SIGTERM, SIGINT): test and bench
# stacks for their whole life, `make up`'s while it starts.
_GUARDED: dict[int, Stack] = {}
_PREVIOUS_HANDLERS: dict[int, object] = {}
_GUARD_INSTALLED = False


def _stop_guarded() -> None:
    for stack in list(_GUARDED.values()):
        with contextlib.suppress(Exception):
            stack.stop()


def _on_signal(signum: int, frame) -> None:
    _stop_guarded()
    previous = _PREVIOUS_HANDLERS.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # SIGINT: Python's, which raises KeyboardInterrupt
    elif previous != signal.SIG_IGN:
        # what the signal would have done: end this process, by that signal
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


@dataclass
class Stack:
    """One running (or stopped) stack; its state is kept in <folder>/state.json."""

    folder: Path
    name: str
    server_dsn: str
    ports: dict[str, int]
    redis_db: int
    secrets_: dict[str, str]
    worker_concurrency: int = 4
    overrides: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    # `make up DEMO=1`: the calendar database of `make demo`, used as it is and never dropped
    external_calendar_db: str | None = None

    # --- names -----------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.folder / "airflow_home"

    @property
    def metadata_db(self) -> str:
        return f"{self.name}_airflow"

    @property
    def calendar_db(self) -> str:
        return self.external_calendar_db or f"{self.name}_calendar"

    @property
    def queue(self) -> str:
        return f"{self.name}_queue"

    @property
    def redis_prefix(self) -> str:
        return f"{self.name}:"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['sim']}/EWS/Exchange.asmx"

    @property
    def metadata_dsn(self) -> str:
        return with_database(self.server_dsn, self.metadata_db)

    @property
    def calendar_dsn(self) -> str:
        return with_database(self.server_dsn, self.calendar_db)

    @property
    def admin_password(self) -> str:
        return self.secrets_["admin_password"]

    @property
    def sim_password(self) -> str:
        return self.secrets_["sim_password"]

    # --- configuration -------------------------------------------------------------------

    def airflow_settings(self) -> dict[str, str]:
        """Every Airflow setting of the stack, as the environment variables compose sets."""
        meta = self.metadata_dsn.replace("postgresql://", "postgresql+psycopg2://", 1)
        api_account = {
            "conn_type": "http",
            "description": "ewssync: lists `ews` connections through the REST API at parse time",
            "host": self.api_url,
            "login": API_ACCOUNT,
            "password": self.secrets_["api_password"],
        }
        settings = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin,{API_ACCOUNT}:op",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{meta}",
            "AIRFLOW__CELERY__BROKER_URL": f"{REDIS_URL}/{self.redis_db}",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": self.redis_prefix,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__CORE__FERNET_KEY": self.secrets_["fernet_key"],
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__PORT": str(self.ports["api"]),
            "AIRFLOW__API__HOST": "127.0.0.1",
            # one API worker: the machine is shared; compose keeps Airflow's default
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets_["jwt_secret"],
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__API__THEME": UI_THEME,
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.ports["scheduler"]),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports["worker_logs"]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports["trigger_logs"]),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "EWSSYNC_DB_CONN_ID": "ewssync_db",
            "AIRFLOW_CONN_EWSSYNC_DB": self.calendar_dsn,
            "AIRFLOW_CONN_EWSSYNC_AIRFLOW_API": json.dumps(api_account),
            "EWSSYNC_SQL_DIR": str(REPO / "include" / "sql"),
        }
        settings.update(self.overrides)
        return settings

    def environment(self) -> dict[str, str]:
        """The components' environment: this process's, minus any other Airflow setup."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW", "EWSSYNC_", "_AIRFLOW"))
        }
        env.update(self.airflow_settings())  # AIRFLOW_HOME marks the stack's processes: stop()
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(REPO)
        return env

    def shell_exports(self) -> str:
        """env.sh: what another terminal needs to reach the stack."""
        values = {
            **self.airflow_settings(),
            "EWSSYNC_UP_API_URL": self.api_url,
            "EWSSYNC_UP_ADMIN_USER": ADMIN_USER,
            "EWSSYNC_UP_ADMIN_PASSWORD": self.admin_password,
            "EWSSYNC_UP_SIM_URL": self.sim_url,
            "EWSSYNC_UP_SIM_USER": SIM_MAILBOX,
            "EWSSYNC_UP_SIM_PASSWORD": self.sim_password,
            "EWSSYNC_UP_CALENDAR_DSN": self.calendar_dsn,
        }
        lines = ["# written by `make up`; source it: . .up/env.sh"]
        lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(values.items())]
        lines.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
        return "\n".join(lines) + "\n"

    def save(self) -> None:
        data = asdict(self)
        data["folder"] = str(self.folder)
        (self.folder / "state.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, folder: Path) -> Stack:
        data = json.loads((folder / "state.json").read_text())
        data["folder"] = Path(data["folder"])
        return cls(**data)

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        folder: Path,
        *,
        name: str | None = None,
        server_dsn: str = SERVER_DSN,
        worker_concurrency: int = 4,
        overrides: dict[str, str] | None = None,
    ) -> Stack:
        from cryptography.fernet import Fernet

        folder = folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        if name is None:
            # One name per folder (so `make down` finds it) and per start (no leftovers).
            digest = hashlib.sha256(str(folder).encode()).hexdigest()[:6]
            name = f"ewssync_up_{digest}_{secrets.token_hex(3)}"
        ports = {
            key: free_port() for key in ("api", "sim", "scheduler", "worker_logs", "trigger_logs")
        }
        return cls(
            folder=folder,
            name=name,
            server_dsn=server_dsn,
            ports=ports,
            # DB 0 is what everyone uses by default; the key prefix and queue isolate anyway.
            redis_db=1 + int(hashlib.sha256(name.encode()).hexdigest(), 16) % 15,
            secrets_={
                "admin_password": secrets.token_urlsafe(12),
                "api_password": secrets.token_urlsafe(18),
                "sim_password": "Kx7-" + secrets.token_urlsafe(9),
                "jwt_secret": secrets.token_hex(32),
                "fernet_key": Fernet.generate_key().decode(),
            },
            worker_concurrency=worker_concurrency,
            overrides=dict(overrides or {}),
        )

    def start(self, *, die_with_parent: bool = False, timeout: float = 300) -> Stack:
        """Create the databases, migrate, start every process; return when the API answers and
        the scheduler and DAG processor are healthy. Stops what it started if anything fails, or
        when this process exits or gets SIGTERM or SIGINT before it is up.

        :param die_with_parent: a stack for this process alone (tests, benches): also stopped
            when this process exits, gets SIGTERM or SIGINT (or dies: each component gets
            SIGTERM) after it is up. Without it (`make up`) the stack outlives this process.
        """
        started = time.monotonic()
        self.stop_with_this_process()
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / "logs").mkdir(exist_ok=True)
            self.save()
            self._create_databases()
            self._write_passwords()
            say(f"Airflow metadata database {self.metadata_db}: airflow db migrate")
            self._airflow("db", "migrate")
            self._prepare_calendar()
            self._start_simulator(die_with_parent)
            for component in COMPONENTS:
                self._start_component(component, die_with_parent)
            self.save()
            self.wait_healthy(timeout=max(30.0, timeout - (time.monotonic() - started)))
        except BaseException:
            self.stop()
            raise
        if not die_with_parent:
            _GUARDED.pop(id(self), None)
        say(f"stack {self.name} up in {time.monotonic() - started:.0f} s: {self.api_url}")
        return self

    def _airflow(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args],
            env=self.environment(),
            cwd=self.folder,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def _admin(self):
        import psycopg2

        conn = psycopg2.connect(self.server_dsn, connect_timeout=10)
        conn.autocommit = True
        return conn

    def _create_databases(self) -> None:
        with contextlib.closing(self._admin()) as admin, admin.cursor() as cur:
            for name in self._own_databases():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{name}"')

    def _own_databases(self) -> tuple[str, ...]:
        if self.external_calendar_db:
            return (self.metadata_db,)
        return (self.metadata_db, self.calendar_db)

    def _write_passwords(self) -> None:
        path = self.home / "passwords.json"
        path.write_text(
            json.dumps(
                {ADMIN_USER: self.admin_password, API_ACCOUNT: self.secrets_["api_password"]}
            )
        )
        path.chmod(0o600)

    def _prepare_calendar(self) -> None:
        from ewssync import store

        os.environ.setdefault("EWSSYNC_SQL_DIR", str(REPO / "include" / "sql"))
        store.migrate(self.calendar_dsn)
        with store.connect(self.calendar_dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO calendar.users (login, email, display_name) VALUES (%s, %s, %s) "
                "ON CONFLICT (login) DO NOTHING",
                ("demo", SIM_MAILBOX, "Demo Technician"),
            )

    def spawn(
        self, key: str, argv: list[str], die_with_parent: bool = False, **kwargs
    ) -> subprocess.Popen:
        """Start one process of the stack, leading a session (and process group) of its own
        that stop() ends with all in it; its output goes to <home>/logs/<key>.log. Recorded in
        state.json at once: `make down` finds it even if `make up` is killed while it starts."""
        log = open(self.home / "logs" / f"{key}.log", "ab")  # noqa: SIM115 (the child keeps it)
        process = subprocess.Popen(
            argv,
            env=self.environment(),
            cwd=REPO,
            stdout=kwargs.pop("stdout", log),
            stderr=log,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
            **kwargs,
        )
        log.close()
        self.pids[key] = process.pid
        self.save()
        return process

    def _start_simulator(self, die_with_parent: bool) -> None:
        process = self.spawn(
            "ewssim",
            [sys.executable, "-m", "tests.ewssim", "--port", str(self.ports["sim"]),
             "--seed", str(FIXTURE), "--user", SIM_MAILBOX, "--password", self.sim_password,
             "--shift-to-today"],
            die_with_parent,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        url = process.stdout.readline().strip()
        process.stdout.close()
        if not url.startswith("http"):
            raise RuntimeError(f"the simulator did not start (it printed {url!r})")
        say(f"Exchange simulator at {url}, mailbox {SIM_MAILBOX}")

    def _start_component(self, component: str, die_with_parent: bool) -> None:
        airflow = str(Path(sys.executable).parent / "airflow")
        argv = {
            "api-server": [airflow, "api-server", "--port", str(self.ports["api"]),
                           "--host", "127.0.0.1", "--workers", "1"],
            "scheduler": [airflow, "scheduler"],
            "dag-processor": [airflow, "dag-processor"],
            "triggerer": [airflow, "triggerer"],
            "celery-worker": [airflow, "celery", "worker", "--queues", self.queue,
                              "--concurrency", str(self.worker_concurrency),
                              "--celery-hostname", f"{self.name}@%h"],
        }[component]  # fmt: skip
        self.spawn(component, argv, die_with_parent)
        say(f"{component} started (pid {self.pids[component]})")

    def alive(self) -> dict[str, bool]:
        """Which processes still run (a child that exited is reaped, not counted as alive)."""
        state = {}
        for key, pid in self.pids.items():
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    state[key] = False
                    continue
            try:
                os.kill(pid, 0)
                state[key] = True
            except ProcessLookupError:
                state[key] = False
        return state

    def wait_healthy(self, timeout: float = 240) -> dict:
        import httpx

        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            dead = [key for key, up in self.alive().items() if not up]
            if dead:
                raise RuntimeError(
                    f"stack {self.name}: {', '.join(dead)} exited; see {self.home}/logs"
                )
            try:
                health = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
                last = health
                if all(
                    (health.get(part) or {}).get("status") == "healthy"
                    for part in ("metadatabase", "scheduler", "dag_processor", "triggerer")
                ):
                    return health
            except (httpx.HTTPError, ValueError) as exc:
                last = exc
            time.sleep(2)
        raise TimeoutError(f"stack {self.name} not healthy after {timeout:.0f} s: {last}")

    def stop_with_this_process(self) -> Stack:
        """Stop this stack when this process exits, or gets SIGTERM or SIGINT (then the signal
        does what it did before: SIGINT raises KeyboardInterrupt, SIGTERM ends the process)."""
        global _GUARD_INSTALLED
        if not _GUARD_INSTALLED:
            _GUARD_INSTALLED = True
            atexit.register(_stop_guarded)
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(ValueError):  # not the main thread: atexit only
                    _PREVIOUS_HANDLERS[signum] = signal.signal(signum, _on_signal)
        _GUARDED[id(self)] = self
        return self

    @property
    def marker(self) -> bytes:
        """What every process of the stack has in its environment."""
        return f"AIRFLOW_HOME={self.home}".encode()

    def processes(self) -> list[int]:
        """Every live process of the stack: the components and all they started."""
        self.alive()  # reap the components that exited (children of this process)
        return session_members(set(self.pids.values()), self.marker)

    def stop(self, *, drop: bool = True, grace: float = 20) -> None:
        """Stop every process and all it started (TERM to their sessions; KILL to what is left
        after ``grace`` seconds), then drop the databases and the Redis keys."""
        _GUARDED.pop(id(self), None)
        sessions = set(self.pids.values())
        if sessions:
            signal_sessions(sessions, self.marker, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.processes():
                time.sleep(0.2)
            # a process may start another while it is killed: until none is left
            deadline = time.monotonic() + 10
            while signal_sessions(sessions, self.marker, signal.SIGKILL):
                if time.monotonic() > deadline:
                    say(f"stack {self.name}: processes {self.processes()} outlive SIGKILL")
                    break
                time.sleep(0.1)
                self.alive()
        for pid in self.pids.values():
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        self.pids = {}
        if drop:
            self._drop()
        if (self.folder / "state.json").exists():
            self.save()

    def _drop(self) -> None:
        import psycopg2

        try:
            with contextlib.closing(self._admin()) as admin, admin.cursor() as cur:
                for name in self._own_databases():
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg2.Error as exc:
            say(f"could not drop the databases of {self.name}: {exc}")
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis.from_url(f"{REDIS_URL}/{self.redis_db}")
            keys = list(client.scan_iter(match=f"{self.redis_prefix}*", count=500))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])


def up(folder: Path, *, demo: bool = False) -> Stack:
    if (folder / "state.json").exists():
        previous = Stack.load(folder)
        if any(previous.alive().values()):
            sys.exit(f"a stack is already running from {folder} (make down first)")
        previous.stop()
    if demo:
        from tools import demo as demo_tool

        stack = Stack.create(folder, server_dsn=demo_tool.SERVER_DSN)
        stack.external_calendar_db = demo_tool.DEMO_DB
        # the demo's mailbox: same fixture (same item ids and UIDs), same password
        stack.secrets_["sim_password"] = demo_tool.PASSWORD
    else:
        stack = Stack.create(folder)
    stack.start()
    (folder / "env.sh").write_text(stack.shell_exports())
    if demo:
        add_demo_connection(stack)
    print(
        f"\nAirflow UI and REST API: {stack.api_url}  (user {ADMIN_USER}, "
        f"password {stack.admin_password})\n"
        f"Exchange simulator:     {stack.sim_url}  (mailbox {SIM_MAILBOX}, "
        f"password {stack.sim_password})\n"
        f"Logs:                   {stack.home / 'logs'}\n"
    )
    if demo:
        print(
            "The connection ews_demo is saved; its DAG ewssync__ews_demo syncs into make demo's "
            "calendar database (unpause it, or trigger it). Stop everything: make down"
        )
        return stack
    print(
        "Add a mailbox from another terminal:\n"
        f"  . {os.path.relpath(folder / 'env.sh')}\n"
        '  airflow connections add ews_demo --conn-type ews --conn-host "$EWSSYNC_UP_SIM_URL" \\\n'
        '    --conn-login "$EWSSYNC_UP_SIM_USER" --conn-password "$EWSSYNC_UP_SIM_PASSWORD" \\\n'
        '    --conn-extra \'{"app_user": "demo", "exchange_timezone": "Europe/Berlin"}\'\n'
        "Its DAG ewssync__ews_demo appears within a minute. Stop everything: make down"
    )
    return stack


def add_demo_connection(stack: Stack) -> None:
    """The demo's connection, through the REST API as the UI would save it."""
    import httpx

    from tools import demo as demo_tool

    with httpx.Client(base_url=stack.api_url, timeout=60) as client:
        token = client.post(
            "/auth/token", json={"username": ADMIN_USER, "password": stack.admin_password}
        ).json()["access_token"]
        answer = client.post(
            "/api/v2/connections",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "connection_id": demo_tool.CONN_ID,
                "conn_type": "ews",
                "description": "Demo technician's mailbox (simulator)",
                "host": stack.sim_url,
                "login": demo_tool.MAILBOX,
                "password": demo_tool.PASSWORD,
                "extra": json.dumps(demo_tool.DEMO_EXTRA),
            },
        )
        answer.raise_for_status()
    say(
        f"connection {demo_tool.CONN_ID} added (calendar database {demo_tool.DEMO_DB} of make "
        f"demo); its DAG ewssync__{demo_tool.CONN_ID} appears within a minute: unpause and trigger "
        "it in the UI"
    )


def down(folder: Path) -> None:
    if not (folder / "state.json").exists():
        say(f"no stack in {folder}")
        return
    stack = Stack.load(folder)
    stack.stop()
    say(f"stack {stack.name} stopped; databases and Redis keys removed")
    shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument(
        "--demo", action="store_true", help="use make demo's calendar database and connection"
    )
    args = parser.parse_args(argv)
    folder = args.dir.resolve()
    if args.command == "up":
        up(folder, demo=args.demo)
    elif args.command == "down":
        down(folder)
    else:
        if not (folder / "state.json").exists():
            print("no stack")
            return
        stack = Stack.load(folder)
        print(
            json.dumps({"name": stack.name, "api": stack.api_url, "alive": stack.alive()}, indent=2)
        )


if __name__ == "__main__":
    main()
