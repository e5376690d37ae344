"""The async client against the real app on mongomock-motor.

Every method runs against the server the app factory builds; the retry and
timeout rules run against a small stand-in server that fails on purpose.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.client import (
    Client,
    ClientError,
    ExperimentStatus,
    IterationStatus,
    Page,
    Pagination,
    Stage,
    connect,
)
from app.client._http import RetryPolicy
from app.server import create_app
from app.settings import Settings
from tests.helpers import database

ADMIN = "root"
ADMIN_PASSWORD = "root-password"
AUTH_ON = {
    "enable_auth": True,
    "jwt_secret": "a test secret that is long enough to sign",
    "admin_username": ADMIN,
    "admin_password": ADMIN_PASSWORD,
}


@pytest.fixture
def settings() -> Settings:
    """Test settings with cheap password hashing and the default body limit,
    which holds the longest error message."""
    return Settings(db_name="deardiary_test", bcrypt_rounds=4)


def url_of(server: TestClient) -> str:
    return str(server.make_url(""))


@pytest.fixture
async def client(api: TestClient) -> AsyncIterator[Client]:
    async with connect(url_of(api)) as client:
        yield client


@pytest.fixture
async def secured(settings: Settings, mongo: Any) -> AsyncIterator[TestClient]:
    """The app factory with authentication on."""
    app = create_app(settings.model_copy(update=AUTH_ON), client=mongo)
    async with TestClient(TestServer(app)) as server:
        yield server


async def lineage(client: Client, project: str = "vision") -> dict[str, int]:
    """A project with an experiment, an iteration and a model."""
    project_id = await client.create_project(project)
    experiment_id = await client.create_experiment(project_id, "sweep")
    return {
        "project_id": project_id,
        "experiment_id": experiment_id,
        "iteration_id": await client.create_iteration(experiment_id),
        "model_id": await client.create_model(project_id, "clf"),
    }


async def files_in(folder: Path) -> list[str]:
    return sorted(await asyncio.to_thread(os.listdir, folder))


async def refusal(call: Any) -> ClientError:
    """The ClientError a call raises."""
    with pytest.raises(ClientError) as caught:
        await call
    return caught.value


# Connecting ---------------------------------------------------------------


def test_client_imports_none_of_the_server_layers() -> None:
    code = (
        "import sys, app.client; print(sorted({m.split('.')[0] + '.' + "
        "m.split('.')[1] for m in sys.modules if m.startswith("
        "('app.store', 'app.services', 'app.web', 'app.server', 'app.settings',"
        " 'motor.', 'pymongo.'))}))"
    )

    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert loaded.stdout.strip() == "[]"


async def test_connect_without_credentials_works_with_auth_off(
    client: Client,
) -> None:
    me = await client.whoami()

    assert await client.health() == "ok"
    assert me.is_admin
    assert client.token is None


async def test_awaited_connect_gives_a_client_to_close(api: TestClient) -> None:
    client = await connect(url_of(api))

    project_id = await client.create_project("p")
    await client.close()

    assert project_id >= 1
    assert client._http.closed


async def test_connect_refuses_half_credentials(api: TestClient) -> None:
    with pytest.raises(ValueError, match="username and password"):
        connect(url_of(api), username="someone")
    with pytest.raises(ValueError, match="not both"):
        connect(url_of(api), username="a", password="b", token="c")


async def test_login_on_a_server_without_auth_is_a_client_error(
    api: TestClient,
) -> None:
    error = await refusal(connect(url_of(api), username="a", password="password1"))

    assert (error.status, error.code) == (404, "NOT_FOUND")


# Projects, experiments, iterations ---------------------------------------


async def test_project_round_trip(client: Client) -> None:
    project_id = await client.create_project("vision", description="cv models")

    await client.update_project(project_id, description="all vision models")
    project = await client.get_project(project_id)
    await client.delete_project(project_id)

    assert project is not None
    assert (project.name, project.description) == ("vision", "all vision models")
    assert project.updated_date is not None
    assert await client.get_project(project_id) is None


async def test_experiment_round_trip_with_status(client: Client) -> None:
    project_id = await client.create_project("vision")

    experiment_id = await client.create_experiment(
        project_id, "sweep", status=ExperimentStatus.STOPPED, description="lr"
    )
    created = await client.get_experiment(experiment_id)
    await client.update_experiment(experiment_id, name="sweep 2", status=3)
    updated = await client.get_experiment(experiment_id)
    listed = await client.get_experiments(project_id)
    await client.delete_experiment(experiment_id)

    assert created is not None and created.status_id == ExperimentStatus.STOPPED
    assert updated is not None and updated.name == "sweep 2"
    assert updated.status_id == ExperimentStatus.FINISHED
    assert [e.id for e in listed] == [experiment_id]
    assert await client.get_experiment(experiment_id) is None


async def test_iteration_round_trip_with_parent(client: Client) -> None:
    ids = await lineage(client)

    child_id = await client.create_iteration(
        ids["experiment_id"], notes="resumed", parent_iteration_id=ids["iteration_id"]
    )
    await client.update_iteration(
        child_id, status=IterationStatus.FAILED, error_message="nan loss"
    )
    child = await client.get_iteration(child_id)
    listed = await client.get_iterations(ids["experiment_id"])
    await client.delete_iteration(child_id)

    assert child is not None
    assert child.parent_iteration_id == ids["iteration_id"]
    assert (child.status_id, child.error_message) == (
        IterationStatus.FAILED,
        "nan loss",
    )
    assert child.end_date is not None
    assert [i.id for i in listed] == [ids["iteration_id"], child_id]
    assert await client.get_iteration(child_id) is None


# Models and versions --------------------------------------------------------


async def test_create_model_returns_the_new_id(client: Client) -> None:
    project_id = await client.create_project("vision")

    model_id = await client.create_model(project_id, "clf", description="digits")

    model = await client.get_model(model_id)
    assert model is not None
    assert (model.id, model.project_id, model.name, model.description) == (
        model_id,
        project_id,
        "clf",
        "digits",
    )


async def test_update_model_changes_only_given_fields(client: Client) -> None:
    ids = await lineage(client)
    await client.update_model(ids["model_id"], description="first")

    await client.update_model(ids["model_id"], name="renamed")

    model = await client.get_model(ids["model_id"])
    assert model is not None
    assert (model.name, model.description) == ("renamed", "first")


async def test_delete_model_removes_it_and_its_versions(client: Client) -> None:
    ids = await lineage(client)
    version_id = await client.create_modelversion(ids["model_id"], ids["iteration_id"])

    await client.delete_model(ids["model_id"])

    assert await client.get_model(ids["model_id"]) is None
    assert await client.get_modelversion(version_id) is None


async def test_getters_return_none_for_missing_records(client: Client) -> None:
    missing = 424242

    found = [
        await client.get_project(missing),
        await client.get_experiment(missing),
        await client.get_iteration(missing),
        await client.get_resource(missing),
        await client.get_model(missing),
        await client.get_modelversion(missing),
        await client.get_user(missing),
        await client.get_userpermission(missing, missing),
        await client.get_userpermission_by_id(missing),
    ]

    assert found == [None] * len(found)


async def test_versions_number_from_one_and_keep_lineage(client: Client) -> None:
    ids = await lineage(client)
    resource_id = await client.create_resource(ids["experiment_id"], "w", b"w1")

    first = await client.create_modelversion(
        ids["model_id"], ids["iteration_id"], resource_id, description="v1"
    )
    second = await client.create_modelversion(ids["model_id"], ids["iteration_id"])

    versions = await client.get_modelversions(ids["model_id"])
    assert [(v.id, v.version) for v in versions] == [(first, 1), (second, 2)]
    assert versions[0].resource_id == resource_id
    assert versions[0].description == "v1"
    assert versions[0].stage_id == Stage.NO_STAGE


async def test_update_modelversion_takes_a_stage_or_an_int(client: Client) -> None:
    ids = await lineage(client)
    first = await client.create_modelversion(ids["model_id"], ids["iteration_id"])
    second = await client.create_modelversion(ids["model_id"], ids["iteration_id"])

    await client.update_modelversion(first, Stage.PRODUCTION)
    await client.update_modelversion(second, 3, description="better")

    old, new = await client.get_modelversions(ids["model_id"])
    assert old.stage_id == Stage.ARCHIVED
    assert (new.stage_id, new.description) == (Stage.PRODUCTION, "better")


async def test_delete_modelversion_never_reuses_its_number(client: Client) -> None:
    ids = await lineage(client)
    first = await client.create_modelversion(ids["model_id"], ids["iteration_id"])

    await client.delete_modelversion(first)
    second = await client.create_modelversion(ids["model_id"], ids["iteration_id"])

    version = await client.get_modelversion(second)
    assert await client.get_modelversion(first) is None
    assert version is not None and version.version == 2


# Pages ------------------------------------------------------------------------


async def test_list_without_page_is_the_first_page_of_records(
    client: Client,
) -> None:
    project_id = await client.create_project("vision")
    for n in range(52):
        await client.create_model(project_id, f"m{n}")

    models = await client.get_models(project_id)

    assert len(models) == 50
    assert [m.name for m in models[:2]] == ["m0", "m1"]


async def test_list_with_page_is_the_envelope(client: Client) -> None:
    project_id = await client.create_project("vision")
    for n in range(5):
        await client.create_model(project_id, f"m{n}")

    page = await client.get_models(project_id, Pagination(limit=2, offset=3))

    assert isinstance(page, Page)
    assert (page.total, page.limit, page.offset) == (5, 2, 3)
    assert [m.name for m in page.data] == ["m3", "m4"]


async def test_iterators_walk_every_page(client: Client) -> None:
    ids = await lineage(client)
    for n in range(4):
        await client.create_model(ids["project_id"], f"m{n}")
        await client.create_modelversion(ids["model_id"], ids["iteration_id"])
        await client.create_iteration(ids["experiment_id"])
        await client.create_resource(ids["experiment_id"], f"r{n}", b"x")
    await client.create_project("other")

    walked = {
        "projects": [p async for p in client.iter_projects(page_size=1)],
        "experiments": [
            e async for e in client.iter_experiments(ids["project_id"], page_size=1)
        ],
        "iterations": [
            i async for i in client.iter_iterations(ids["experiment_id"], page_size=2)
        ],
        "resources": [
            r async for r in client.iter_resources(ids["experiment_id"], page_size=3)
        ],
        "models": [m async for m in client.iter_models(ids["project_id"], page_size=2)],
        "versions": [
            v async for v in client.iter_modelversions(ids["model_id"], page_size=3)
        ],
        "users": [u async for u in client.iter_users(page_size=1)],
    }

    counts = {name: len(records) for name, records in walked.items()}
    assert counts == {
        "projects": 2,
        "experiments": 1,
        "iterations": 5,
        "resources": 4,
        "models": 5,
        "versions": 4,
        "users": 1,
    }
    assert [v.version for v in walked["versions"]] == [1, 2, 3, 4]


async def test_every_list_has_a_page_form(client: Client) -> None:
    ids = await lineage(client)
    first = Pagination(limit=1)

    pages = [
        await client.get_projects(first),
        await client.get_experiments(ids["project_id"], first),
        await client.get_iterations(ids["experiment_id"], first),
        await client.get_resources(ids["experiment_id"], first),
        await client.get_models(ids["project_id"], first),
        await client.get_modelversions(ids["model_id"], first),
        await client.get_users(first),
    ]

    assert [isinstance(page, Page) for page in pages] == [True] * len(pages)
    assert [page.total for page in pages] == [1, 1, 1, 0, 1, 0, 1]
    assert await client.get_projects() == (await client.get_projects(first)).data
    assert await client.get_users() == (await client.get_users(first)).data


async def test_lists_under_a_missing_parent_are_empty(client: Client) -> None:
    models = await client.get_models(999)
    page = await client.get_modelversions(999, Pagination(limit=5))
    walked = [m async for m in client.iter_models(999)]

    assert models == []
    assert (page.data, page.total, page.limit) == ([], 0, 5)
    assert walked == []


# Resources -----------------------------------------------------------------------


async def test_upload_from_bytes_path_and_stream(
    client: Client, tmp_path: Path
) -> None:
    ids = await lineage(client)
    data = bytes(range(256)) * 2400  # several chunks on both sides
    file = tmp_path / "weights.bin"
    file.write_bytes(data)

    from_bytes = await client.create_resource(ids["experiment_id"], "a", data)
    from_path = await client.create_resource(ids["experiment_id"], "b", str(file))
    with file.open("rb") as stream:
        from_stream = await client.create_resource(
            ids["experiment_id"], "c", stream, description="streamed"
        )
        still_open = not stream.closed

    sha256 = hashlib.sha256(data).hexdigest()
    for resource_id in (from_bytes, from_path, from_stream):
        resource = await client.get_resource(resource_id)
        assert resource is not None
        assert (resource.size_bytes, resource.content_hash) == (len(data), sha256)
    assert still_open


async def test_download_to_path_writes_the_verified_bytes(
    client: Client, tmp_path: Path
) -> None:
    ids = await lineage(client)
    data = b"\x00\xffcheckpoint" * 70_000
    resource_id = await client.create_resource(ids["experiment_id"], "w", data)
    target = tmp_path / "model.bin"

    digest = await client.download_resource(resource_id, target)

    assert target.read_bytes() == data
    assert digest == hashlib.sha256(data).hexdigest()
    assert await files_in(tmp_path) == ["model.bin"]


async def test_download_to_stream_writes_the_bytes(client: Client) -> None:
    ids = await lineage(client)
    resource_id = await client.create_resource(ids["experiment_id"], "w", b"")
    sink = io.BytesIO()

    digest = await client.download_resource(resource_id, sink)

    assert sink.getvalue() == b""
    assert digest == hashlib.sha256(b"").hexdigest()


async def _corrupt(mongo: Any, settings: Settings, resource_id: int) -> None:
    """Flip the first stored byte of a resource, keeping its length."""
    chunks = database(mongo, settings)["fs.chunks"]
    chunk = await chunks.find_one({"files_id": resource_id, "n": 0})
    data = bytes(chunk["data"])
    tampered = bytes([data[0] ^ 0xFF]) + data[1:]
    await chunks.update_one({"_id": chunk["_id"]}, {"$set": {"data": tampered}})


async def test_corrupt_download_to_path_leaves_no_file(
    client: Client, mongo: Any, settings: Settings, tmp_path: Path
) -> None:
    ids = await lineage(client)
    resource_id = await client.create_resource(ids["experiment_id"], "w", b"weights")
    await _corrupt(mongo, settings, resource_id)

    error = await refusal(client.download_resource(resource_id, tmp_path / "m.bin"))

    assert (error.status, error.code) == (200, "CHECKSUM_MISMATCH")
    assert await files_in(tmp_path) == []


async def test_corrupt_download_to_stream_raises_checksum_mismatch(
    client: Client, mongo: Any, settings: Settings
) -> None:
    ids = await lineage(client)
    resource_id = await client.create_resource(ids["experiment_id"], "w", b"weights")
    await _corrupt(mongo, settings, resource_id)

    error = await refusal(client.download_resource(resource_id, io.BytesIO()))

    assert error.code == "CHECKSUM_MISMATCH"
    assert str(resource_id) in error.message


async def test_download_of_a_missing_resource_is_404(
    client: Client, tmp_path: Path
) -> None:
    error = await refusal(client.download_resource(999, tmp_path / "m.bin"))

    assert (error.status, error.code) == (404, "NOT_FOUND")
    assert await files_in(tmp_path) == []


async def test_upload_to_a_missing_experiment_is_404(client: Client) -> None:
    error = await refusal(client.create_resource(999, "w", io.BytesIO(b"x" * 10**6)))

    assert (error.status, error.code) == (404, "NOT_FOUND")


async def test_update_and_delete_resource(client: Client) -> None:
    ids = await lineage(client)
    resource_id = await client.create_resource(ids["experiment_id"], "w", b"x")

    await client.update_resource(resource_id, name="weights", description="final")
    resource = await client.get_resource(resource_id)
    await client.delete_resource(resource_id)

    assert resource is not None
    assert (resource.name, resource.description) == ("weights", "final")
    assert await client.get_resource(resource_id) is None


# Refusals become ClientError ------------------------------------------------------


async def test_duplicate_model_name_is_409_conflict(client: Client) -> None:
    ids = await lineage(client)

    error = await refusal(client.create_model(ids["project_id"], "clf"))

    assert (error.status, error.code) == (409, "CONFLICT")
    assert "clf" in error.message
    assert error.request == f"POST /model/project/{ids['project_id']}"
    assert str(error).startswith(f"{error.request} answered 409 CONFLICT: ")


async def test_deleting_a_referenced_resource_is_409(client: Client) -> None:
    ids = await lineage(client)
    resource_id = await client.create_resource(ids["experiment_id"], "w", b"x")
    await client.create_modelversion(ids["model_id"], ids["iteration_id"], resource_id)

    error = await refusal(client.delete_resource(resource_id))

    assert (error.status, error.code) == (409, "CONFLICT")


@pytest.mark.parametrize("stage", [True, 7, "3"])
async def test_bad_stage_is_422_invalid_payload(client: Client, stage: Any) -> None:
    ids = await lineage(client)
    version_id = await client.create_modelversion(ids["model_id"], ids["iteration_id"])

    error = await refusal(client.update_modelversion(version_id, stage))

    assert (error.status, error.code) == (422, "INVALID_PAYLOAD")
    assert "stage_id" in error.message


async def test_cross_project_lineage_is_422(client: Client) -> None:
    ids = await lineage(client)
    other = await lineage(client, project="other")

    error = await refusal(
        client.create_modelversion(ids["model_id"], other["iteration_id"])
    )

    assert (error.status, error.code) == (422, "INVALID_PAYLOAD")


async def test_blank_name_is_422(client: Client) -> None:
    error = await refusal(client.create_project("   "))

    assert (error.status, error.code) == (422, "INVALID_PAYLOAD")


async def test_writes_to_missing_records_are_404_errors(client: Client) -> None:
    calls = [
        client.update_model(999, name="x"),
        client.delete_model(999),
        client.update_modelversion(999, Stage.STAGING),
        client.delete_modelversion(999),
        client.create_model(999, "clf"),
    ]

    errors = [await refusal(call) for call in calls]

    assert {(e.status, e.code) for e in errors} == {(404, "NOT_FOUND")}


async def test_ids_must_be_integers(client: Client) -> None:
    with pytest.raises(TypeError):
        await client.get_model("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await client.delete_model(True)


# The iteration context manager ----------------------------------------------------


async def test_iteration_block_marks_succeeded(client: Client) -> None:
    ids = await lineage(client)

    async with client.iteration(ids["experiment_id"], notes="lr=0.1") as run:
        started = run

    finished = await client.get_iteration(started.id)
    assert (started.status_id, started.notes) == (IterationStatus.RUNNING, "lr=0.1")
    assert finished is not None
    assert finished.status_id == IterationStatus.SUCCEEDED
    assert finished.end_date is not None


async def test_iteration_block_marks_failed_and_reraises(client: Client) -> None:
    ids = await lineage(client)

    with pytest.raises(ValueError, match="loss is nan"):
        async with client.iteration(ids["experiment_id"]) as run:
            raise ValueError("loss is nan")

    failed = await client.get_iteration(run.id)
    assert failed is not None
    assert (failed.status_id, failed.error_message) == (
        IterationStatus.FAILED,
        "loss is nan",
    )


async def test_iteration_error_text_is_made_storable(client: Client) -> None:
    ids = await lineage(client)

    with pytest.raises(RuntimeError):
        async with client.iteration(ids["experiment_id"]) as run:
            raise RuntimeError("bad\x00byte\n" + "x" * 70_000)
    with pytest.raises(KeyError):
        async with client.iteration(ids["experiment_id"]) as blank:
            raise KeyError()

    failed = await client.get_iteration(run.id)
    unnamed = await client.get_iteration(blank.id)
    assert failed is not None and unnamed is not None
    assert failed.error_message.startswith("bad byte\nxxx")
    assert len(failed.error_message) == 65_536
    assert unnamed.error_message == "KeyError"


async def test_cancelled_iteration_block_marks_killed(client: Client) -> None:
    ids = await lineage(client)

    with pytest.raises(asyncio.CancelledError):
        async with client.iteration(ids["experiment_id"]) as run:
            raise asyncio.CancelledError()

    killed = await client.get_iteration(run.id)
    assert killed is not None and killed.status_id == IterationStatus.KILLED


async def test_iteration_block_in_a_missing_experiment_raises(
    client: Client,
) -> None:
    entered = False

    with pytest.raises(ClientError) as caught:
        async with client.iteration(999):
            entered = True

    assert caught.value.status == 404
    assert not entered


# Users and permissions, auth off (the server acts as admin) -------------------------


async def test_user_round_trip(client: Client) -> None:
    user_id = await client.create_user("ada", "a long password", first_name="Ada")

    await client.update_user(user_id, last_name="Lovelace")
    user = await client.get_user(user_id)
    users = await client.get_users()
    await client.delete_user(user_id)

    assert user is not None
    assert (user.username, user.first_name, user.last_name) == (
        "ada",
        "Ada",
        "Lovelace",
    )
    assert not user.is_admin
    assert user_id in [u.id for u in users]
    assert await client.get_user(user_id) is None


async def test_permission_round_trip(client: Client) -> None:
    user_id = await client.create_user("ada", "a long password")
    project_id = await client.create_project("vision")

    permission_id = await client.create_userpermission(
        user_id, project_id, read_permission=True
    )
    await client.update_userpermission(permission_id, create_permission=True)
    by_pair = await client.get_userpermission(user_id, project_id)
    by_id = await client.get_userpermission_by_id(permission_id)
    await client.delete_userpermission(permission_id)

    assert by_pair is not None and by_pair == by_id
    assert (by_pair.read_permission, by_pair.create_permission) == (True, True)
    assert (by_pair.update_permission, by_pair.delete_permission) == (False, False)
    assert await client.get_userpermission(user_id, project_id) is None


async def test_second_permission_record_is_409(client: Client) -> None:
    user_id = await client.create_user("ada", "a long password")
    project_id = await client.create_project("vision")
    await client.create_userpermission(user_id, project_id, read_permission=True)

    error = await refusal(client.create_userpermission(user_id, project_id))

    assert (error.status, error.code) == (409, "CONFLICT")


# Auth on ----------------------------------------------------------------------------


async def _member(
    secured: TestClient, *, read: bool, create: bool = False
) -> tuple[int, Client]:
    """A project, and a client of a user with the given flags on it."""
    async with connect(
        url_of(secured), username=ADMIN, password=ADMIN_PASSWORD
    ) as admin:
        project_id = await admin.create_project("vision")
        user_id = await admin.create_user("ada", "ada-password")
        await admin.create_userpermission(
            user_id, project_id, read_permission=read, create_permission=create
        )
    member = await connect(url_of(secured), username="ada", password="ada-password")
    return project_id, member


async def test_login_carries_the_token_to_every_call(secured: TestClient) -> None:
    async with connect(
        url_of(secured), username=ADMIN, password=ADMIN_PASSWORD
    ) as client:
        project_id = await client.create_project("vision")
        me = await client.whoami()

        assert client.token is not None
        assert me.username == ADMIN and me.is_admin
        assert await client.get_project(project_id) is not None


async def test_refresh_token_replaces_the_token(secured: TestClient) -> None:
    async with connect(
        url_of(secured), username=ADMIN, password=ADMIN_PASSWORD
    ) as client:
        envelope = await client.refresh_token()

        assert envelope.token_type == "Bearer"
        assert envelope.user.username == ADMIN
        assert client.token == envelope.access_token
        assert (await client.whoami()).username == ADMIN


async def test_connect_with_a_token_skips_the_login(secured: TestClient) -> None:
    async with connect(
        url_of(secured), username=ADMIN, password=ADMIN_PASSWORD
    ) as first:
        token = first.token

    async with connect(url_of(secured), token=token) as client:
        assert (await client.whoami()).username == ADMIN


async def test_wrong_password_is_401_invalid_credentials(
    secured: TestClient,
) -> None:
    error = await refusal(connect(url_of(secured), username=ADMIN, password="nope"))

    assert (error.status, error.code) == (401, "INVALID_CREDENTIALS")


async def test_missing_token_is_401_even_for_getters(secured: TestClient) -> None:
    async with connect(url_of(secured)) as client:
        error = await refusal(client.get_model(1))

    assert (error.status, error.code) == (401, "TOKEN_MISSING")


async def test_bad_token_is_401_token_invalid(secured: TestClient) -> None:
    async with connect(url_of(secured), token="not.a.token") as client:
        error = await refusal(client.get_projects())

    assert (error.status, error.code) == (401, "TOKEN_INVALID")


async def test_reader_without_create_flag_gets_403(secured: TestClient) -> None:
    project_id, member = await _member(secured, read=True)
    async with member:
        error = await refusal(member.create_model(project_id, "clf"))
        project = await member.get_project(project_id)

    assert (error.status, error.code) == (403, "PROJECT_PERMISSION_REQUIRED")
    assert project is not None


async def test_unreadable_project_looks_missing(secured: TestClient) -> None:
    project_id, member = await _member(secured, read=False, create=True)
    async with member:
        project = await member.get_project(project_id)
        models = await member.get_models(project_id)

    assert project is None
    assert models == []


async def test_admin_only_routes_are_403_for_others(secured: TestClient) -> None:
    _, member = await _member(secured, read=True)
    async with member:
        project = await refusal(member.create_project("mine"))
        other = await refusal(member.get_user(1))

    assert (project.status, project.code) == (403, "ADMIN_REQUIRED")
    assert (other.status, other.code) == (403, "SAME_USER_REQUIRED")


# The transport: retries and timeouts --------------------------------------------------


class Flaky:
    """A stand-in server whose answers the test scripts, counting hits."""

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.hits = 0
        self.keys: list[str | None] = []
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        self.keys.append(request.headers.get("Idempotency-Key"))
        step = self.script.pop(0) if self.script else "ok"
        if step == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if step == "hang":
            await self.release.wait()
        if step == "503":
            envelope = {"code": "DATABASE_UNAVAILABLE", "message": "down"}
            return web.json_response(envelope, status=503)
        if step == "html":
            return web.Response(status=502, text="<h1>bad gateway</h1>")
        if step == "busy":
            envelope = {"code": "IDEMPOTENCY_KEY_IN_FLIGHT", "message": "running"}
            return web.json_response(envelope, status=409, headers={"Retry-After": "2"})
        if request.method == "PATCH":
            return web.json_response({"message": "UPDATED"})
        if request.method == "DELETE":
            return web.json_response({"message": "OK"})
        if request.method == "POST":
            return web.json_response({"model_id": 7}, status=201)
        return web.json_response(
            {
                "id": 1,
                "project_id": 1,
                "name": "clf",
                "created_date": "2024-01-01T00:00:00.000Z",
            }
        )


@pytest.fixture
async def flaky_url() -> AsyncIterator[tuple[Flaky, str]]:
    flaky = Flaky()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", flaky.handle)
    async with TestClient(TestServer(app)) as server:
        yield flaky, url_of(server)
        flaky.release.set()


async def test_get_is_retried_after_503(flaky_url: tuple[Flaky, str]) -> None:
    flaky, url = flaky_url
    flaky.script = ["503", "503"]

    async with connect(url) as client:
        model = await client.get_model(1)

    assert model is not None and model.name == "clf"
    assert flaky.hits == 3


async def test_get_gives_up_after_its_tries(flaky_url: tuple[Flaky, str]) -> None:
    flaky, url = flaky_url
    flaky.script = ["503"] * 5

    async with connect(url, attempts=2) as client:
        error = await refusal(client.get_model(1))

    assert (error.status, error.code) == (503, "DATABASE_UNAVAILABLE")
    assert flaky.hits == 2


async def test_get_is_retried_after_a_dropped_connection(
    flaky_url: tuple[Flaky, str],
) -> None:
    flaky, url = flaky_url
    flaky.script = ["drop"]

    async with connect(url) as client:
        model = await client.get_model(1)

    assert model is not None
    assert flaky.hits == 2


async def test_write_is_retried_after_503_with_the_same_key(
    flaky_url: tuple[Flaky, str],
) -> None:
    flaky, url = flaky_url
    flaky.script = ["503"]

    async with connect(url) as client:
        model_id = await client.create_model(1, "clf")

    assert model_id == 7
    assert flaky.hits == 2
    assert flaky.keys[0] is not None and flaky.keys == [flaky.keys[0]] * 2


async def test_write_is_retried_after_a_dropped_connection_with_the_same_key(
    flaky_url: tuple[Flaky, str],
) -> None:
    flaky, url = flaky_url
    flaky.script = ["drop"]

    async with connect(url) as client:
        model_id = await client.create_model(1, "clf")

    assert model_id == 7
    assert flaky.hits == 2
    assert flaky.keys[0] is not None and flaky.keys == [flaky.keys[0]] * 2


async def test_write_gives_up_after_its_tries(flaky_url: tuple[Flaky, str]) -> None:
    flaky, url = flaky_url
    flaky.script = ["drop"] * 5

    async with connect(url, attempts=2) as client:
        error = await refusal(client.create_model(1, "clf"))

    assert (error.status, error.code) == (0, "CONNECTION_ERROR")
    assert str(error).startswith("POST /model/project/1 failed: CONNECTION_ERROR")
    assert flaky.hits == 2


async def test_slow_answer_is_a_timeout(flaky_url: tuple[Flaky, str]) -> None:
    flaky, url = flaky_url
    flaky.script = ["hang"]

    async with connect(url, timeout=0.2) as client:
        error = await refusal(client.get_model(1))

    assert (error.status, error.code) == (0, "TIMEOUT")
    assert flaky.hits == 1


async def test_answer_without_envelope_is_unexpected_response(
    flaky_url: tuple[Flaky, str],
) -> None:
    flaky, url = flaky_url
    flaky.script = ["html"]

    async with connect(url) as client:
        error = await refusal(client.get_model(1))

    assert (error.status, error.code) == (502, "UNEXPECTED_RESPONSE")
    assert "bad gateway" in error.message


async def test_unreachable_server_is_a_connection_error() -> None:
    server = TestServer(web.Application())
    await server.start_server()
    url = str(server.make_url("/registry"))
    await server.close()  # nothing listens on the port any more

    async with connect(url, attempts=2) as client:
        error = await refusal(client.get_model(1))

    assert (error.status, error.code) == (0, "CONNECTION_ERROR")
    assert error.request == "GET /registry/model/1"


async def test_update_is_retried_after_a_dropped_connection_with_the_same_key(
    flaky_url: tuple[Flaky, str],
) -> None:
    flaky, url = flaky_url
    flaky.script = ["drop", "503"]

    async with connect(url) as client:
        await client.update_modelversion(1, stage=Stage.PRODUCTION)

    assert flaky.hits == 3
    assert flaky.keys[0] is not None and flaky.keys == [flaky.keys[0]] * 3


async def test_every_write_carries_a_key_of_its_own(
    flaky_url: tuple[Flaky, str],
) -> None:
    flaky, url = flaky_url

    async with connect(url) as client:
        await client.create_model(1, "clf")
        await client.create_model(1, "clf")
        await client.update_model(1, description="d")
        await client.update_modelversion(1, stage=Stage.STAGING)

    assert None not in flaky.keys
    assert len(set(flaky.keys)) == 4


async def test_repeat_in_flight_waits_as_long_as_the_server_asks(
    flaky_url: tuple[Flaky, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky, url = flaky_url
    flaky.script = ["busy", "busy"]
    asked: list[float | None] = []

    def pause(self: RetryPolicy, attempt: int, at_least: float | None = None) -> float:
        asked.append(at_least)
        return 0.0

    monkeypatch.setattr(RetryPolicy, "pause", pause)
    async with connect(url) as client:
        model_id = await client.create_model(1, "clf")

    assert model_id == 7
    assert asked == [2.0, 2.0]
    assert flaky.keys[0] is not None and flaky.keys == [flaky.keys[0]] * 3


def test_pause_is_never_shorter_than_the_server_asks() -> None:
    policy = RetryPolicy(backoff=0.01, max_backoff=5.0)

    pauses = [policy.pause(1, at_least=2.0) for _ in range(20)]
    capped = RetryPolicy(max_backoff=0.5).pause(1, at_least=2.0)

    assert min(pauses) == 2.0
    assert capped == 0.5


async def test_delete_is_repeated_once_at_most_after_dropped_connections(
    flaky_url: tuple[Flaky, str],
) -> None:
    flaky, url = flaky_url
    flaky.script = ["drop", "drop"]

    async with connect(url) as client:
        error = await refusal(client.delete_model(1))

    # A DELETE carries no key. aiohttp sends it once more on a dropped
    # connection (HTTP counts DELETE as idempotent); the client adds none.
    assert (error.status, error.code) == (0, "CONNECTION_ERROR")
    assert flaky.hits == 2 and flaky.keys == [None, None]


async def test_write_without_a_key_is_not_repeated_after_503(
    flaky_url: tuple[Flaky, str],
) -> None:
    flaky, url = flaky_url
    flaky.script = ["503"]

    async with connect(url) as client:
        error = await refusal(client.delete_model(1, if_match='"1-1"'))

    assert (error.status, error.code) == (503, "DATABASE_UNAVAILABLE")
    assert flaky.hits == 1
