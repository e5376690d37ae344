"""The registry's rules (SPEC 2), one service per kind of record."""

from __future__ import annotations

from dataclasses import dataclass

from app.auth import PasswordHasher, TokenCodec
from app.services.access import Access, Actor, Permission
from app.services.experiments import ExperimentService
from app.services.iterations import IterationService
from app.services.models import ModelService
from app.services.modelversions import ModelVersionService
from app.services.permissions import PermissionService
from app.services.projects import ProjectService
from app.services.resources import ResourceService
from app.services.users import AuthService, LoginThrottle, UserService
from app.settings import Settings
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
    users: UserService
    userpermissions: PermissionService
    auth: AuthService

    @classmethod
    def build(cls, store: Store, settings: Settings | None = None) -> Services:
        """Wire the services onto ``store``, configured by ``settings``."""
        settings = settings or Settings()
        access = Access()
        users = UserService(store, access, PasswordHasher(settings.bcrypt_rounds))
        return cls(
            store=store,
            access=access,
            projects=ProjectService(store, access),
            experiments=ExperimentService(store, access),
            iterations=IterationService(store, access),
            resources=ResourceService(store, access),
            models=ModelService(store, access),
            modelversions=ModelVersionService(store, access),
            users=users,
            userpermissions=PermissionService(store, access),
            auth=AuthService(
                store, users, _tokens(settings), _throttle(store, settings)
            ),
        )


def _tokens(settings: Settings) -> TokenCodec | None:
    if not settings.enable_auth:
        return None
    # A missing secret is refused like a short one.
    return TokenCodec(settings.jwt_secret or "", settings.token_ttl_seconds)


def _throttle(store: Store, settings: Settings) -> LoginThrottle:
    return LoginThrottle(
        store,
        max_failures=settings.login_max_failures,
        window_seconds=settings.login_window_seconds,
    )
