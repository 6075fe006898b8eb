#!/bin/bash
# Runs once, when the postgres service initialises an empty data volume
# (/docker-entrypoint-initdb.d). The image itself creates the Airflow metadata database
# ($POSTGRES_DB = airflow); this adds the application's calendar database and its owner role.
# The calendar schema itself is created by the pipeline's migrations at its first run.
set -euo pipefail

: "${EWSSYNC_DB_NAME:=calendar}"
: "${EWSSYNC_DB_USER:=ewssync}"
: "${EWSSYNC_DB_PASSWORD:?EWSSYNC_DB_PASSWORD must be set for the postgres service}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v db="$EWSSYNC_DB_NAME" -v owner="$EWSSYNC_DB_USER" -v pw="$EWSSYNC_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'owner', :'pw')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
echo "ewssync: database ${EWSSYNC_DB_NAME} (owner ${EWSSYNC_DB_USER}) ready"
