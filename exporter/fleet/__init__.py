"""The fleet: many perfpulse instances on one PostgreSQL.

Agents register their host and relay each snapshot through PostgreSQL (`sinks/relay.py`);
an instance serving the dashboard listens (`listener.py`) and streams any host, or the
whole fleet, to its clients. No instance connects to another.
"""
