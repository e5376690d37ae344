"""The registry's rules (SPEC 2), one service per kind of record."""

from __future__ import annotations

from dataclasses import dataclass

from app.services.access import Access, Actor, Permission
from app.services.experiments import ExperimentService
from app.services.iterations import IterationService
from app.services.models import ModelService
from app.services.modelversions import ModelVersionService
from app.services.projects import ProjectService
from app.services.resources import ResourceService
from app.store.database import Store

__all__ = ["Access", "Actor", "Permission", "Services"]


@dataclass(frozen=True)
class Services:
    """Every service, sharing one store and one access policy."""

    store: Store
    access: Access
    projects: ProjectService
    experiments: ExperimentService
    iterations: IterationService
    resources: ResourceService
    models: ModelService
    modelversions: ModelVersionService

    @classmethod
    def build(cls, store: Store) -> Services:
        """Wire the services onto ``store``."""
        access = Access(store)
        return cls(
            store=store,
            access=access,
            projects=ProjectService(store, access),
            experiments=ExperimentService(store, access),
            iterations=IterationService(store, access),
            resources=ResourceService(store, access),
            models=ModelService(store, access),
            modelversions=ModelVersionService(store, access),
        )
