"""The blocking client against the real app on mongomock-motor.

The server runs on the test's event loop, so each scenario is a plain
function run in a worker thread, as a training script would run.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from aiohttp.test_utils import TestClient

from app.client import (
    Client,
    ClientError,
    IterationStatus,
    Model,
    Page,
    Pagination,
    Stage,
    SyncClient,
    connect_sync,
)

T = TypeVar("T")


async def in_thread(scenario: Callable[[str], T], api: TestClient) -> T:
    """Run a blocking scenario against the server, off its event loop."""
    return await asyncio.to_thread(scenario, str(api.make_url("")))


def _lineage(client: SyncClient) -> tuple[int, int, int]:
    project_id = client.create_project("vision")
    experiment_id = client.create_experiment(project_id, "sweep")
    return project_id, experiment_id, client.create_model(project_id, "clf")


def test_sync_client_has_every_public_method_of_the_async_one() -> None:
    public = {name for name in dir(Client) if not name.startswith("_")}

    missing = public - set(dir(SyncClient))
    still_async = [
        name
        for name in public & set(dir(SyncClient))
        if inspect.iscoroutinefunction(getattr(SyncClient, name))
    ]

    assert missing == set()
    assert still_async == []


async def test_registry_story_runs_blocking(api: TestClient) -> None:
    def scenario(url: str) -> list[tuple[int, Stage]]:
        with connect_sync(url) as client:
            _, experiment_id, model_id = _lineage(client)
            with client.iteration(experiment_id, notes="run 1") as run:
                resource_id = client.create_resource(experiment_id, "w", b"w1")
            first = client.create_modelversion(model_id, run.id, resource_id)
            second = client.create_modelversion(model_id, run.id)

            client.update_modelversion(first, Stage.PRODUCTION)
            client.update_modelversion(second, 3)
            return [(v.version, v.stage_id) for v in client.get_modelversions(model_id)]

    versions = await in_thread(scenario, api)

    assert versions == [(1, Stage.ARCHIVED), (2, Stage.PRODUCTION)]


async def test_getters_return_none_and_failures_raise(api: TestClient) -> None:
    def scenario(url: str) -> tuple[object, ClientError]:
        with connect_sync(url) as client:
            project_id, _, _ = _lineage(client)
            missing = client.get_model(999)
            try:
                client.create_model(project_id, "clf")
            except ClientError as exc:
                return missing, exc
        raise AssertionError("a duplicate name was accepted")

    missing, error = await in_thread(scenario, api)

    assert missing is None
    assert (error.status, error.code) == (409, "CONFLICT")


async def test_pages_lists_and_iterators(api: TestClient) -> None:
    def scenario(url: str) -> tuple[int, Page[Model], list[str], list[str]]:
        with connect_sync(url) as client:
            project_id = client.create_project("vision")
            for n in range(5):
                client.create_model(project_id, f"m{n}")
            first = client.get_models(project_id)
            page = client.get_models(project_id, Pagination(limit=2, offset=1))
            walked = [m.name for m in client.iter_models(project_id, page_size=2)]
            early = client.iter_models(project_id, page_size=1)
            taken = [next(early).name, next(early).name]
            early.close()  # stopping early closes the walk cleanly
            return len(first), page, walked, taken

    count, page, walked, taken = await in_thread(scenario, api)

    assert count == 5
    assert (page.total, page.limit, page.offset, len(page.data)) == (5, 2, 1, 2)
    assert walked == ["m0", "m1", "m2", "m3", "m4"]
    assert taken == ["m0", "m1"]


async def test_resources_round_trip_through_path_and_stream(
    api: TestClient, tmp_path: Path
) -> None:
    data = b"\x00weights\xff" * 50_000
    source = tmp_path / "weights.bin"
    source.write_bytes(data)

    def scenario(url: str) -> tuple[str, bytes, bytes]:
        with connect_sync(url) as client:
            _, experiment_id, _ = _lineage(client)
            with source.open("rb") as stream:
                from_stream = client.create_resource(experiment_id, "a", stream)
            from_path = client.create_resource(experiment_id, "b", source)

            digest = client.download_resource(from_path, tmp_path / "copy.bin")
            sink = io.BytesIO()
            client.download_resource(from_stream, sink)
            return digest, (tmp_path / "copy.bin").read_bytes(), sink.getvalue()

    digest, copied, streamed = await in_thread(scenario, api)

    assert digest == hashlib.sha256(data).hexdigest()
    assert copied == data
    assert streamed == data


async def test_iteration_block_marks_failed_and_reraises(api: TestClient) -> None:
    def scenario(url: str) -> tuple[IterationStatus, str]:
        with connect_sync(url) as client:
            _, experiment_id, _ = _lineage(client)
            try:
                with client.iteration(experiment_id) as run:
                    raise ValueError("diverged")
            except ValueError:
                pass
            failed = client.get_iteration(run.id)
            assert failed is not None
            return failed.status_id, failed.error_message

    status, message = await in_thread(scenario, api)

    assert (status, message) == (IterationStatus.FAILED, "diverged")


async def test_interrupted_iteration_block_marks_killed(api: TestClient) -> None:
    def scenario(url: str) -> IterationStatus:
        with connect_sync(url) as client:
            _, experiment_id, _ = _lineage(client)
            try:
                with client.iteration(experiment_id) as run:
                    raise KeyboardInterrupt
            except KeyboardInterrupt:
                pass
            killed = client.get_iteration(run.id)
            assert killed is not None
            return killed.status_id

    status = await in_thread(scenario, api)

    assert status == IterationStatus.KILLED


async def test_whoami_and_users_work_blocking(api: TestClient) -> None:
    def scenario(url: str) -> tuple[str, list[str]]:
        with connect_sync(url) as client:
            client.create_user("ada", "a long password")
            me = client.whoami()
            return me.username, [u.username for u in client.get_users()]

    me, users = await in_thread(scenario, api)

    assert me == "admin"
    assert users == ["admin", "ada"]


async def test_close_stops_the_background_thread(api: TestClient) -> None:
    def scenario(url: str) -> tuple[bool, str]:
        client = connect_sync(url)
        client.get_projects()
        client.close()
        client.close()  # closing twice is harmless
        try:
            client.get_projects()
        except RuntimeError as exc:
            return any(t.name == "deardiary-client" for t in threading.enumerate()), (
                str(exc)
            )
        raise AssertionError("a closed client made a call")

    alive, message = await in_thread(scenario, api)

    assert not alive
    assert "closed" in message


async def test_failed_connect_leaves_no_thread(api: TestClient) -> None:
    def scenario(url: str) -> ClientError:
        try:
            connect_sync(url, username="nobody", password="password1")
        except ClientError as exc:
            return exc
        raise AssertionError("logged in on a server without auth")

    error = await in_thread(scenario, api)

    assert error.status == 404
    assert not any(t.name == "deardiary-client" for t in threading.enumerate())
