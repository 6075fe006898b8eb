"""ewssync: two-way sync between Exchange calendars (EWS) and PostgreSQL, run by Airflow."""

__version__ = "0.1.0"
