"""PostgreSQL: connection pool, migrations, the embedded server, and every SQL statement."""
