"""perfpulse: a host-performance exporter."""

__version__ = "0.1.0"
