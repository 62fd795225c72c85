"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from exporter.config import Settings
from exporter.sampler import Sampler


def _sampler(request: Request) -> Sampler:
    sampler: Sampler = request.state.sampler
    return sampler


def _registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry = request.state.registry
    return registry


def _settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


SamplerDep = Annotated[Sampler, Depends(_sampler)]
RegistryDep = Annotated[CollectorRegistry, Depends(_registry)]
SettingsDep = Annotated[Settings, Depends(_settings)]
