"""Airflow provider metadata: registers the `ews` connection type."""


def get_provider_info() -> dict:
    return {
        "package-name": "ewssync",
        "name": "ewssync",
        "description": "Exchange (EWS) calendar <-> PostgreSQL two-way sync",
        "versions": ["0.1.0"],
        "connection-types": [
            {"hook-class-name": "ewssync.hook.EwsHook", "connection-type": "ews"}
        ],
    }
