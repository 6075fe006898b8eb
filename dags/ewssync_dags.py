"""One Exchange calendar sync DAG per Airflow connection of type `ews` (see ewssync.discovery)."""

from ewssync.dag_factory import build_all
from ewssync.discovery import discover_connections

globals().update(build_all(discover_connections()))
