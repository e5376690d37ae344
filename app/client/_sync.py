"""The blocking client, for scripts that are not async.

`SyncClient` has the methods of `Client` with the same arguments and
answers, but blocking. Its calls run on a private event loop in a
background thread, so it works in a plain script and beside a loop that
is already running (a notebook, say). Close it, or use it in a ``with``.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from app.client._base import Pagination
from app.client._client import DEFAULT_TIMEOUT, Client, IterationRun, connect
from app.schemas import (
    Experiment,
    Iteration,
    Model,
    ModelVersion,
    ModelVersionEvent,
    Page,
    Project,
    Resource,
    Stage,
    User,
)

P = ParamSpec("P")
T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread of its own."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="deardiary-client", daemon=True
        )
        self._thread.start()

    @property
    def closed(self) -> bool:
        """True once the loop has stopped for good."""
        return self._loop.is_closed()

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        """Run ``call`` on the loop and wait for its answer."""
        if self._loop.is_closed() or threading.current_thread() is self._thread:
            call.close()
            raise RuntimeError("the client is closed or called from its own loop")
        future = asyncio.run_coroutine_threadsafe(call, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # an interrupt here stops the call too
            raise

    def stop(self) -> None:
        """Finish the loop's housekeeping, stop it and join the thread."""
        if self._loop.is_closed():
            return
        self.run(self._loop.shutdown_asyncgens())
        self.run(self._loop.shutdown_default_executor())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def _blocking(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncClient, P], T]:
    """The blocking form of a `Client` method."""

    def call(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._loop.run(method(self._client, *args, **kwargs))

    _copy_names(call, method)
    return call


def _walking(
    method: Callable[Concatenate[Client, P], AsyncIterator[T]],
) -> Callable[Concatenate[SyncClient, P], Iterator[T]]:
    """The blocking form of a `Client` iterator method."""

    def call(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._iterate(method(self._client, *args, **kwargs))

    _copy_names(call, method)
    return call


def _copy_names(wrapper: Any, method: Any) -> None:
    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    wrapper.__qualname__ = f"SyncClient.{method.__name__}"
    wrapper.__wrapped__ = method


def _shut_down(client: Client, loop: _LoopThread) -> None:
    if loop.closed:
        return
    try:
        loop.run(client.close())
    finally:
        loop.stop()


async def _step(items: AsyncIterator[T]) -> tuple[bool, T | None]:
    try:
        return True, await anext(items)
    except StopAsyncIteration:
        return False, None


class SyncClient:
    """A registry over HTTP, blocking; see `Client` for every method."""

    def __init__(self, client: Client, loop: _LoopThread) -> None:
        self._client = client
        self._loop = loop
        # A script that never closes its client still releases it at exit.
        self._release = weakref.finalize(self, _shut_down, client, loop)

    @property
    def url(self) -> str:
        """The registry's base URL."""
        return self._client.url

    @property
    def token(self) -> str | None:
        """The bearer token the calls carry, or None."""
        return self._client.token

    def close(self) -> None:
        """Close the pooled connections and stop the background loop."""
        self._release()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def iteration(
        self,
        experiment_id: int,
        notes: str | None = None,
        parent_iteration_id: int | None = None,
    ) -> SyncIterationRun:
        """A training run as a context manager: see `IterationRun`."""
        run = self._client.iteration(experiment_id, notes, parent_iteration_id)
        return SyncIterationRun(run, self._loop)

    def _iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                more, item = self._loop.run(_step(items))
                if not more:
                    return
                yield item  # type: ignore[misc]
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                self._loop.run(close())

    def _list(
        self, method: Any, *args: Any, page: Pagination | None, **kwargs: Any
    ) -> Any:
        call = (
            method(*args, **kwargs) if page is None else method(*args, page, **kwargs)
        )
        return self._loop.run(call)

    health = _blocking(Client.health)
    login = _blocking(Client.login)
    refresh_token = _blocking(Client.refresh_token)
    whoami = _blocking(Client.whoami)

    get_project = _blocking(Client.get_project)
    iter_projects = _walking(Client.iter_projects)
    create_project = _blocking(Client.create_project)
    update_project = _blocking(Client.update_project)
    delete_project = _blocking(Client.delete_project)

    @overload
    def get_projects(self) -> list[Project]: ...
    @overload
    def get_projects(self, page: Pagination) -> Page[Project]: ...
    def get_projects(self, page: Pagination | None = None) -> Any:
        """The first page of readable projects, or the page ``page`` names."""
        return self._list(self._client.get_projects, page=page)

    get_experiment = _blocking(Client.get_experiment)
    iter_experiments = _walking(Client.iter_experiments)
    create_experiment = _blocking(Client.create_experiment)
    update_experiment = _blocking(Client.update_experiment)
    delete_experiment = _blocking(Client.delete_experiment)

    @overload
    def get_experiments(self, project_id: int) -> list[Experiment]: ...
    @overload
    def get_experiments(
        self, project_id: int, page: Pagination
    ) -> Page[Experiment]: ...
    def get_experiments(self, project_id: int, page: Pagination | None = None) -> Any:
        """The first page of the project's experiments, or the page named."""
        return self._list(self._client.get_experiments, project_id, page=page)

    get_iteration = _blocking(Client.get_iteration)
    iter_iterations = _walking(Client.iter_iterations)
    create_iteration = _blocking(Client.create_iteration)
    update_iteration = _blocking(Client.update_iteration)
    delete_iteration = _blocking(Client.delete_iteration)

    @overload
    def get_iterations(self, experiment_id: int) -> list[Iteration]: ...
    @overload
    def get_iterations(
        self, experiment_id: int, page: Pagination
    ) -> Page[Iteration]: ...
    def get_iterations(self, experiment_id: int, page: Pagination | None = None) -> Any:
        """The first page of the experiment's iterations, or the page named."""
        return self._list(self._client.get_iterations, experiment_id, page=page)

    get_resource = _blocking(Client.get_resource)
    iter_resources = _walking(Client.iter_resources)
    create_resource = _blocking(Client.create_resource)
    download_resource = _blocking(Client.download_resource)
    update_resource = _blocking(Client.update_resource)
    delete_resource = _blocking(Client.delete_resource)

    @overload
    def get_resources(self, experiment_id: int) -> list[Resource]: ...
    @overload
    def get_resources(self, experiment_id: int, page: Pagination) -> Page[Resource]: ...
    def get_resources(self, experiment_id: int, page: Pagination | None = None) -> Any:
        """The first page of the experiment's resources, or the page named."""
        return self._list(self._client.get_resources, experiment_id, page=page)

    get_model = _blocking(Client.get_model)
    get_production = _blocking(Client.get_production)
    iter_models = _walking(Client.iter_models)
    iter_model_history = _walking(Client.iter_model_history)
    create_model = _blocking(Client.create_model)
    update_model = _blocking(Client.update_model)
    delete_model = _blocking(Client.delete_model)

    @overload
    def get_models(self, project_id: int) -> list[Model]: ...
    @overload
    def get_models(self, project_id: int, page: Pagination) -> Page[Model]: ...
    def get_models(self, project_id: int, page: Pagination | None = None) -> Any:
        """The first page of the project's models, or the page ``page`` names."""
        return self._list(self._client.get_models, project_id, page=page)

    @overload
    def get_model_history(self, id: int) -> list[ModelVersionEvent]: ...
    @overload
    def get_model_history(
        self, id: int, page: Pagination
    ) -> Page[ModelVersionEvent]: ...
    def get_model_history(self, id: int, page: Pagination | None = None) -> Any:
        """The first page of the model's history, oldest first, or the page
        named."""
        return self._list(self._client.get_model_history, id, page=page)

    get_modelversion = _blocking(Client.get_modelversion)
    iter_modelversions = _walking(Client.iter_modelversions)
    iter_modelversion_history = _walking(Client.iter_modelversion_history)
    create_modelversion = _blocking(Client.create_modelversion)
    update_modelversion = _blocking(Client.update_modelversion)
    delete_modelversion = _blocking(Client.delete_modelversion)

    @overload
    def get_modelversions(
        self, model_id: int, *, stage: Stage | int | None = None
    ) -> list[ModelVersion]: ...
    @overload
    def get_modelversions(
        self, model_id: int, page: Pagination, *, stage: Stage | int | None = None
    ) -> Page[ModelVersion]: ...
    def get_modelversions(
        self,
        model_id: int,
        page: Pagination | None = None,
        *,
        stage: Stage | int | None = None,
    ) -> Any:
        """The first page of the model's versions (in ``stage`` if given),
        or the page named."""
        return self._list(
            self._client.get_modelversions, model_id, page=page, stage=stage
        )

    @overload
    def get_modelversion_history(self, id: int) -> list[ModelVersionEvent]: ...
    @overload
    def get_modelversion_history(
        self, id: int, page: Pagination
    ) -> Page[ModelVersionEvent]: ...
    def get_modelversion_history(self, id: int, page: Pagination | None = None) -> Any:
        """The first page of the version's history, oldest first, or the
        page named."""
        return self._list(self._client.get_modelversion_history, id, page=page)

    get_user = _blocking(Client.get_user)
    iter_users = _walking(Client.iter_users)
    create_user = _blocking(Client.create_user)
    update_user = _blocking(Client.update_user)
    delete_user = _blocking(Client.delete_user)

    @overload
    def get_users(self) -> list[User]: ...
    @overload
    def get_users(self, page: Pagination) -> Page[User]: ...
    def get_users(self, page: Pagination | None = None) -> Any:
        """The first page of users (admins only), or the page named."""
        return self._list(self._client.get_users, page=page)

    get_userpermission = _blocking(Client.get_userpermission)
    get_userpermission_by_id = _blocking(Client.get_userpermission_by_id)
    create_userpermission = _blocking(Client.create_userpermission)
    update_userpermission = _blocking(Client.update_userpermission)
    delete_userpermission = _blocking(Client.delete_userpermission)


class SyncIterationRun:
    """`IterationRun` as a plain context manager."""

    def __init__(self, run: IterationRun, loop: _LoopThread) -> None:
        self._run = run
        self._loop = loop

    def __enter__(self) -> Iteration:
        return self._loop.run(self._run.__aenter__())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._loop.run(self._run.__aexit__(exc_type, exc, traceback))


def connect_sync(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    attempts: int = 3,
    pool_size: int = 100,
) -> SyncClient:
    """A blocking client of the registry at ``url``; options as `connect`."""
    connecting = connect(
        url,
        username=username,
        password=password,
        token=token,
        timeout=timeout,
        attempts=attempts,
        pool_size=pool_size,
    )
    loop = _LoopThread()

    async def open_client() -> Client:
        return await connecting

    try:
        client = loop.run(open_client())
    except BaseException:
        loop.stop()
        raise
    return SyncClient(client, loop)
