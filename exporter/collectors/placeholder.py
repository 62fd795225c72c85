"""A collector whose source is not implemented yet; keeps the snapshot shape final."""

from __future__ import annotations

from typing import NoReturn

from exporter.collectors.base import Unavailable


class NotImplementedCollector:
    """Always unavailable with the reason "not implemented"."""

    def __init__(self, name: str) -> None:
        self.name = name

    def collect(self) -> NoReturn:
        raise Unavailable("not implemented")
