"""Request dependencies: the objects the app builds once at start-up, as typed aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.admission import Admission
from app.settings import GatewaySettings
from contract.job_store import JobStore
from contract.registry import ModelRegistry


def _admission(request: Request) -> Admission:
    admission: Admission = request.app.state.admission
    return admission


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


AdmissionDep = Annotated[Admission, Depends(_admission)]
StoreDep = Annotated[JobStore, Depends(_store)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
