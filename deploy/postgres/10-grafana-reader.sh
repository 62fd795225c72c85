#!/bin/sh
# Runs once, when the postgres container initialises its data directory: a read-only
# role for Grafana. It can read what perfpulse stores, including tables perfpulse creates
# later (default privileges), and nothing else.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v reader_password="$GRAFANA_DB_READER_PASSWORD" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'reader_password';
GRANT CONNECT ON DATABASE perfpulse TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE perfpulse IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
REVOKE SELECT ON TABLE users FROM grafana_reader;
SQL
