"""Grafana dashboards generated from the panel spec, and `perfpulse grafana push`."""
