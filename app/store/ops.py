"""Reads and writes that the store sends in one round trip where it can.

A service that needs several documents at once names them as `Related`
reads of one main document; a service that changes several collections at
once lists its `Insert`, `Update` and `Delete` steps in order. Where the
server allows it (see `app.mongo.ServerFeatures`) the store sends the reads
as one aggregate (``$lookup``) and the writes of a transaction as one
``bulkWrite``; elsewhere it sends one command per step, in the same order,
with the same outcome. This module only describes the steps and translates
them; `app.store.database.Store` runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo import DeleteMany, DeleteOne, InsertOne, UpdateMany, UpdateOne

Document = dict[str, Any]


@dataclass(frozen=True)
class Ref:
    """A value taken from the main document of a read: its ``field``, or,
    with a ``prefix``, the field's value as text after the prefix (the way
    counters are named)."""

    field: str
    prefix: str | None = None

    def value(self, doc: Document) -> Any:
        """The value for the main document ``doc``."""
        value = doc[self.field]
        return value if self.prefix is None else f"{self.prefix}{value}"

    def expression(self, variable: str) -> Any:
        """The same value inside a ``$lookup`` that binds the field to
        ``variable``."""
        if self.prefix is None:
            return f"$${variable}"
        return {"$concat": [self.prefix, {"$toString": f"$${variable}"}]}


@dataclass(frozen=True)
class Related:
    """Documents of ``collection`` read together with a main document.

    ``query`` is a plain filter whose top-level values may be `Ref`s to the
    main document; ``many`` reads every match, otherwise the first or None.
    """

    collection: str
    query: Document
    projection: Document | None = None
    many: bool = False

    def resolved(self, main: Document) -> Document:
        """The query with the main document's values in place of `Ref`s."""
        return {
            key: value.value(main) if isinstance(value, Ref) else value
            for key, value in self.query.items()
        }

    def lookup(self, name: str) -> list[Document]:
        """The stages that read these documents into ``name``: a
        ``$lookup`` joined on one equality of the query, after the
        ``$addFields`` that puts the value to join on in place when it is
        not a field of the main document as it is."""
        refs = {
            key: value for key, value in self.query.items() if isinstance(value, Ref)
        }
        fixed = {
            key: value
            for key, value in self.query.items()
            if not isinstance(value, Ref)
        }
        variables = {f"v{n}": ref for n, ref in enumerate(refs.values())}
        stages: list[Document] = []
        if refs:
            equalities = [
                {"$eq": [f"${key}", ref.expression(variable)]}
                for key, (variable, ref) in zip(refs, variables.items(), strict=True)
            ]
            stages.append({"$match": {"$expr": {"$and": equalities}}})
        if fixed:
            stages.append({"$match": fixed})
        if not self.many:
            stages.append({"$limit": 1})
        if self.projection is not None:
            stages.append({"$project": self.projection})
        lookup: Document = {"from": self.collection, "pipeline": stages, "as": name}
        if variables:
            lookup["let"] = {
                variable: f"${ref.field}" for variable, ref in variables.items()
            }
        before: list[Document] = []
        joined = join_key(self.query)
        if joined is not None:
            # The join narrows what the sub-pipeline sees to the documents
            # an index of the other collection finds (SecantusDB feeds a
            # sub-pipeline without one the whole collection); the
            # sub-pipeline still checks every condition, so the join's own
            # looser equality (missing matches null) changes nothing.
            key, value = joined
            lookup["foreignField"] = key
            if isinstance(value, Ref) and value.prefix is None:
                lookup["localField"] = value.field
            else:
                local = f"{name}_key"
                before.append({"$addFields": {local: _value_expression(value)}})
                lookup["localField"] = local
        return [*before, {"$lookup": lookup}]

    def added_fields(self, name: str) -> list[str]:
        """The fields of the main document that `lookup` adds besides
        ``name``, for the reader to remove."""
        joined = join_key(self.query)
        if joined is None:
            return []
        _, value = joined
        if isinstance(value, Ref) and value.prefix is None:
            return []
        return [f"{name}_key"]

    def picked(self, found: list[Document]) -> Any:
        """What a lookup that found ``found`` answers: all, or the first."""
        if self.many:
            return found
        return found[0] if found else None


def join_key(query: Document) -> tuple[str, Any] | None:
    """The equality of ``query`` to join on: ``_id`` if the query names
    it, else its first `Ref`, else its first plain value; None when every
    condition is an operator."""
    plain = [
        (key, value)
        for key, value in query.items()
        if not key.startswith("$") and not isinstance(value, dict | list)
    ]
    for key, value in plain:
        if key == "_id":
            return key, value
    for key, value in plain:
        if isinstance(value, Ref):
            return key, value
    return plain[0] if plain else None


def _value_expression(value: Any) -> Any:
    """An aggregation expression for a joined value, on the main document."""
    if isinstance(value, Ref):
        if value.prefix is None:
            return f"${value.field}"
        return {"$concat": [value.prefix, {"$toString": f"${value.field}"}]}
    return {"$literal": value}


@dataclass(frozen=True)
class Insert:
    """Insert ``docs``, in order."""

    collection: str
    docs: list[Document]


@dataclass(frozen=True)
class Update:
    """Apply ``update`` to the first match, or to every match if ``many``.

    A ``required`` update that matches fewer than ``matches`` documents
    (one, unless ``many``) means that a document read earlier has changed
    since: the store raises `Contention` and the transaction body runs
    again from its reads.
    """

    collection: str
    query: Document
    update: Document
    many: bool = False
    required: bool = False
    matches: int = 1


@dataclass(frozen=True)
class Delete:
    """Delete the first match, or every match if ``many``; a ``required``
    delete that matches nothing raises `Contention`, as for `Update`."""

    collection: str
    query: Document
    many: bool = False
    required: bool = False


Write = Insert | Update | Delete


@dataclass
class BulkPlan:
    """Writes as the models of one client ``bulkWrite``, and which models
    must match how many documents (by index)."""

    models: list[Any] = field(default_factory=list)
    required: dict[int, int] = field(default_factory=dict)


def bulk_plan(writes: list[Write], database: str) -> BulkPlan:
    """The ``bulkWrite`` models of ``writes`` on ``database``, in order."""
    plan = BulkPlan()
    for write in writes:
        namespace = f"{database}.{write.collection}"
        if isinstance(write, Insert):
            plan.models += [InsertOne(doc, namespace=namespace) for doc in write.docs]
            continue
        if write.required:
            least = write.matches if isinstance(write, Update) else 1
            plan.required[len(plan.models)] = least
        plan.models.append(_model(write, namespace))
    return plan


def _model(write: Update | Delete, namespace: str) -> Any:
    if isinstance(write, Update):
        kind = UpdateMany if write.many else UpdateOne
        return kind(write.query, write.update, namespace=namespace)
    removal = DeleteMany if write.many else DeleteOne
    return removal(write.query, namespace=namespace)


def matched(result: Any, index: int) -> int:
    """How many documents the model at ``index`` of a verbose client
    ``bulkWrite`` result matched (updates) or deleted (deletes)."""
    updates: Mapping[int, Any] = result.update_results
    if index in updates:
        return int(updates[index].matched_count)
    return int(result.delete_results[index].deleted_count)


def read_pipeline(
    query: Document, related: Mapping[str, Related]
) -> tuple[list[Document], dict[str, str]]:
    """The aggregate that reads the first match of ``query`` with its
    ``related`` documents, and the field each name's lookup lands in.

    The lookups land in fields of their own, so that no field of the main
    document is overwritten.
    """
    fields = {name: f"_related_{n}" for n, name in enumerate(related)}
    pipeline: list[Document] = [{"$match": query}, {"$limit": 1}]
    added: list[str] = []
    for name, field_name in fields.items():
        pipeline += related[name].lookup(field_name)
        added += related[name].added_fields(field_name)
    if added:
        pipeline.append({"$unset": added})
    return pipeline, fields


def picked(
    found: Document, related: Mapping[str, Related], fields: Mapping[str, str]
) -> tuple[Document, dict[str, Any]]:
    """The main document and, by name, its related documents, from what
    `read_pipeline` found."""
    return found, {
        name: related[name].picked(found.pop(field)) for name, field in fields.items()
    }


def counted_parent(
    parent_id: int, parent_fields: Document, collection: str, query: Document
) -> list[Document]:
    """The aggregate that reads a parent document with the number of its
    children in ``collection`` (see `counted_total`)."""
    lookup: Document = {
        "from": collection,
        # $group rather than $count: SecantusDB refuses $count inside a
        # sub-pipeline.
        "pipeline": [
            {"$match": query},
            {"$group": {"_id": None, "n": {"$sum": 1}}},
        ],
        "as": "_count",
    }
    pipeline: list[Document] = [
        {"$match": {"_id": parent_id}},
        {"$project": parent_fields},
    ]
    joined = join_key(query)
    if joined is not None:
        # Joined on the query's equality so that the children come from an
        # index, as in `Related.lookup`.
        key, value = joined
        pipeline.append({"$addFields": {"_count_key": _value_expression(value)}})
        lookup |= {"localField": "_count_key", "foreignField": key}
    pipeline.append({"$lookup": lookup})
    if joined is not None:
        pipeline.append({"$unset": "_count_key"})
    return pipeline


def counted_total(parent: Document) -> int:
    """The number of children `counted_parent` found, taken off ``parent``."""
    counts = parent.pop("_count")
    return int(counts[0]["n"]) if counts else 0
