"""The aggregates the store sends for related reads and counted pages.

Each ``$lookup`` joins on one equality of its query (``localField`` and
``foreignField``), so that the other collection's index finds the
candidates: without the join a sub-pipeline sees the whole collection on
SecantusDB, the embedded store, and a registration or a page costs a scan.
What the joined reads answer is checked on a real server in
tests/integration/test_store_real.py.
"""

from __future__ import annotations

from typing import Any

from app.store.ops import (
    Ref,
    Related,
    _value_expression,
    counted_parent,
    join_key,
    read_pipeline,
)


def _lookups(pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [stage["$lookup"] for stage in pipeline if "$lookup" in stage]


def test_a_related_read_joins_each_lookup_on_an_equality() -> None:
    related = {
        "counter": Related(
            "counters", {"_id": Ref("model_id", prefix="modelversion:")}
        ),
        "production": Related(
            "modelversions",
            {"model_id": Ref("model_id"), "stage_id": 3, "_id": {"$ne": 3}},
            many=True,
        ),
        "iteration": Related("iterations", {"_id": 5}),
    }

    pipeline, fields = read_pipeline({"_id": 3}, related)

    joins = [(x["localField"], x["foreignField"]) for x in _lookups(pipeline)]
    counter, _, iteration = fields.values()
    assert joins == [
        (f"{counter}_key", "_id"),
        ("model_id", "model_id"),
        (f"{iteration}_key", "_id"),
    ]
    assert {"$addFields": {f"{iteration}_key": {"$literal": 5}}} in pipeline
    # The values joined on are taken off the answer again.
    assert pipeline[-1] == {"$unset": [f"{counter}_key", f"{iteration}_key"]}


def test_a_counted_page_joins_its_count_on_the_parent_equality() -> None:
    pipeline = counted_parent(7, {"project_id": 1}, "modelversions", {"model_id": 7})

    (lookup,) = _lookups(pipeline)
    assert (lookup["localField"], lookup["foreignField"]) == ("_count_key", "model_id")
    assert pipeline[-1] == {"$unset": "_count_key"}


def test_the_join_prefers_the_id_then_a_reference_then_a_value() -> None:
    ref = Ref("model_id")

    assert join_key({"stage_id": 3, "_id": 4}) == ("_id", 4)
    assert join_key({"stage_id": 3, "model_id": ref}) == ("model_id", ref)
    assert join_key({"stage_id": 3}) == ("stage_id", 3)
    assert join_key({"_id": {"$in": [1, 2]}}) is None


def test_a_value_joined_on_is_the_main_documents_field_or_a_literal() -> None:
    assert _value_expression(Ref("model_id")) == "$model_id"
    assert _value_expression(Ref("model_id", prefix="m:")) == {
        "$concat": ["m:", {"$toString": "$model_id"}]
    }
    assert _value_expression(5) == {"$literal": 5}
