"""Alerts evaluated by perfpulse itself: rules (rules.py), their state per snapshot
(evaluate.py), kept in PostgreSQL (store.py) and delivered to Alertmanager and webhooks
(deliver.py)."""
