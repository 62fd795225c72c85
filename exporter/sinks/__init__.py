"""The three sinks every snapshot feeds: Prometheus exposition, the live stream, the batch writer."""
