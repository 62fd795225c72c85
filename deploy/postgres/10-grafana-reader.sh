#!/bin/sh
# Runs once, when the postgres container initialises its data directory: a read-only
# role for Grafana. It gets no table here: perfpulse grants it SELECT on the metrics tables
# (metrics_snapshots, metrics_rollup_1m) at every start, once they exist, and never on
# users (password hashes) or anything else (exporter/storage/migrate.py, grant_reader).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v reader_password="$GRAFANA_DB_READER_PASSWORD" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'reader_password';
GRANT CONNECT ON DATABASE perfpulse TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
SQL
