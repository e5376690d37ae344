"""The registry's records and request bodies, as pydantic models.

Records are read from MongoDB documents (``_id`` becomes ``id``) and written
as the API's JSON. Request bodies are strict: no coercion, no unknown
fields, so ``"3"``, ``3.0`` and ``true`` are not a stage and a client-sent
``version`` is refused.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

E = TypeVar("E", bound=IntEnum)

MAX_ID = 2**63 - 1
# bcrypt reads at most 72 bytes; a longer password is refused, not cut.
PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 72
NAME_MAX = 256
DESCRIPTION_MAX = 65_536


class Stage(IntEnum):
    """Lifecycle stage of a model version."""

    NO_STAGE = 1
    STAGING = 2
    PRODUCTION = 3
    ARCHIVED = 4


class ExperimentStatus(IntEnum):
    IN_PROGRESS = 1
    STOPPED = 2
    FINISHED = 3


class IterationStatus(IntEnum):
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    KILLED = 4


def _iso_millis(value: datetime) -> str:
    # A naive value is UTC already (the store keeps UTC); an aware one is
    # turned to UTC, whose offset every such text ends with.
    if value.tzinfo is None:
        return value.isoformat(timespec="milliseconds") + "Z"
    return value.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _name(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= NAME_MAX:
        raise ValueError(f"must be 1 to {NAME_MAX} characters after trimming")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _text(value: str) -> str:
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _member_of(enum: type[E]) -> Any:
    """A check that the input is a plain integer naming a member of ``enum``."""
    allowed = ", ".join(str(member.value) for member in enum)

    def check(value: Any) -> E:
        if isinstance(value, enum):
            return value
        if type(value) is not int:
            raise ValueError("must be an integer")
        try:
            return enum(value)
        except ValueError:
            raise ValueError(f"must be one of {allowed}") from None

    return check


# JSON Schema patterns for the API's description: no control characters
# in names; line breaks and tabs allowed in free text.
_NO_CONTROLS = r"^[^\x00-\x1f\x7f-\x9f]*$"
_TEXT_CONTROLS = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"

Timestamp = Annotated[
    datetime,
    PlainSerializer(_iso_millis, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "UTC, ISO 8601 with milliseconds",
        },
        mode="serialization",
    ),
]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Name = Annotated[
    str,
    AfterValidator(_name),
    Field(
        description=f"1 to {NAME_MAX} characters after trimming surrounding "
        "whitespace; no control characters",
        json_schema_extra={
            "minLength": 1,
            "maxLength": NAME_MAX,
            "pattern": _NO_CONTROLS,
        },
    ),
]
Description = Annotated[
    str,
    Field(max_length=DESCRIPTION_MAX, json_schema_extra={"pattern": _TEXT_CONTROLS}),
    AfterValidator(_text),
]


def now() -> datetime:
    """The current time, truncated to what MongoDB stores (milliseconds)."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# Records ---------------------------------------------------------------


class Record(BaseModel):
    """A stored record; ``_id`` in MongoDB, ``id`` in JSON.

    ``revision`` is 1 for a new record and grows by one with every change,
    automatic ones included; a record stored before revisions were counted
    reads as 0 until its first change.
    """

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: int = Field(alias="_id")
    revision: int = 0

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Any:
        """Build the record from its MongoDB document."""
        return cls.model_validate(doc)

    @property
    def etag(self) -> str:
        """The record's strong entity tag, as ETag and If-Match carry it."""
        return entity_tag(self.id, self.revision)


def entity_tag(id_: int, revision: int) -> str:
    """The strong entity tag of revision ``revision`` of record ``id_``."""
    return f'"{id_}-{revision}"'


class Project(Record):
    name: str
    description: str = ""
    created_date: Timestamp
    updated_date: Timestamp | None = None


class Experiment(Record):
    project_id: int
    status_id: ExperimentStatus
    name: str
    description: str = ""
    created_date: Timestamp
    updated_date: Timestamp | None = None
    end_date: Timestamp | None = None


class Iteration(Record):
    experiment_id: int
    parent_iteration_id: int | None = None
    status_id: IterationStatus
    notes: str = ""
    error_message: str = ""
    created_date: Timestamp
    updated_date: Timestamp | None = None
    end_date: Timestamp | None = None


class Resource(Record):
    experiment_id: int
    name: str
    description: str = ""
    size_bytes: int
    content_hash: str
    created_date: Timestamp
    updated_date: Timestamp | None = None


class Model(Record):
    project_id: int
    name: str
    description: str = ""
    created_date: Timestamp
    updated_date: Timestamp | None = None


class ModelVersion(Record):
    model_id: int
    version: int
    iteration_id: int
    resource_id: int | None = None
    stage_id: Stage
    description: str = ""
    created_date: Timestamp
    updated_date: Timestamp | None = None


class EventKind(StrEnum):
    """What happened to a model version."""

    REGISTERED = "REGISTERED"
    STAGE_CHANGED = "STAGE_CHANGED"
    DELETED = "DELETED"


class ModelVersionEvent(BaseModel):
    """One entry of a model's history: a version registered, moved from
    stage to stage, or deleted.

    ``requested`` is false for a change the registry made itself (the
    archiving a promotion causes); ``caused_by`` then names the event of the
    requested change. Stages are null where they do not apply: no stage
    before a registration, none after a deletion.
    """

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: int = Field(alias="_id")
    model_id: int
    modelversion_id: int
    version: int
    kind: EventKind
    from_stage_id: Stage | None = None
    to_stage_id: Stage | None = None
    user_id: int
    at: Timestamp
    requested: bool = True
    caused_by: int | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Any:
        """Build the event from its MongoDB document."""
        return cls.model_validate(doc)


R = TypeVar("R")


class Page(BaseModel, Generic[R]):
    """One page of a list: the records and where they sit in the whole."""

    data: list[R]
    total: int
    limit: int
    offset: int


# Request bodies ----------------------------------------------------------


class Body(BaseModel):
    """A strict request body: exact types, no unknown fields."""

    # Enum fields hold plain ints, the form they are stored in.
    model_config = ConfigDict(extra="forbid", strict=True, use_enum_values=True)

    def changes(self) -> dict[str, Any]:
        """The fields the client set to a value; null means unchanged."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ProjectCreate(Body):
    name: Name
    description: Description = ""


class ProjectUpdate(Body):
    name: Name | None = None
    description: Description | None = None


StageChoice = Annotated[Stage, BeforeValidator(_member_of(Stage))]
ExperimentStatusChoice = Annotated[
    ExperimentStatus, BeforeValidator(_member_of(ExperimentStatus))
]
IterationStatusChoice = Annotated[
    IterationStatus, BeforeValidator(_member_of(IterationStatus))
]


class ExperimentCreate(Body):
    name: Name
    status_id: ExperimentStatusChoice = ExperimentStatus.IN_PROGRESS
    description: Description = ""


class ExperimentUpdate(Body):
    name: Name | None = None
    status_id: ExperimentStatusChoice | None = None
    description: Description | None = None


class IterationCreate(Body):
    notes: Description = ""
    parent_iteration_id: Id | None = None


class IterationUpdate(Body):
    status_id: IterationStatusChoice | None = None
    notes: Description | None = None
    error_message: Description | None = None


class ResourceCreate(Body):
    name: Name
    description: Description = ""


class ResourceUpdate(Body):
    name: Name | None = None
    description: Description | None = None


class ModelCreate(Body):
    name: Name
    description: Description = ""


class ModelUpdate(Body):
    name: Name | None = None
    description: Description | None = None


class ModelVersionCreate(Body):
    iteration_id: Id
    resource_id: Id | None = None
    description: Description = ""


class ModelVersionUpdate(Body):
    stage_id: StageChoice | None = None
    description: Description | None = None
    resource_id: Id | None = None


# Users, permissions and tokens -------------------------------------------


class User(Record):
    """A user as the API shows it; the password hash is never part of it."""

    username: str
    first_name: str = ""
    last_name: str = ""
    is_admin: bool = False
    created_date: Timestamp
    updated_date: Timestamp | None = None


class UserPermission(Record):
    user_id: int
    project_id: int
    create_permission: bool
    read_permission: bool
    update_permission: bool
    delete_permission: bool


class TokenEnvelope(BaseModel):
    """The answer to a login or a refresh."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_at: Timestamp
    user: User


def _password(value: str) -> str:
    size = len(value.encode())
    if not PASSWORD_MIN_BYTES <= size <= PASSWORD_MAX_BYTES:
        raise ValueError(
            f"must be {PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes in UTF-8"
        )
    return value


def _person_name(value: str) -> str:
    value = value.strip()
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("must not contain control characters")
    return value


Password = Annotated[
    str,
    AfterValidator(_password),
    Field(
        description=f"{PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes in UTF-8",
        json_schema_extra={
            "minLength": PASSWORD_MIN_BYTES,
            "maxLength": PASSWORD_MAX_BYTES,
        },
    ),
]
PersonName = Annotated[
    str,
    Field(max_length=NAME_MAX, json_schema_extra={"pattern": _NO_CONTROLS}),
    AfterValidator(_person_name),
]


class Credentials(Body):
    username: str
    password: str


class UserCreate(Body):
    username: Name
    password: Password
    first_name: PersonName = ""
    last_name: PersonName = ""


class UserUpdate(Body):
    password: Password | None = None
    first_name: PersonName | None = None
    last_name: PersonName | None = None
    is_admin: bool | None = None


class UserPermissionCreate(Body):
    create_permission: bool
    read_permission: bool
    update_permission: bool
    delete_permission: bool


class UserPermissionUpdate(Body):
    create_permission: bool | None = None
    read_permission: bool | None = None
    update_permission: bool | None = None
    delete_permission: bool | None = None
