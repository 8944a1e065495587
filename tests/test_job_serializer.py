"""arq's job serializer: orjson where it is exact, the standard library where orjson is not."""

from __future__ import annotations

from typing import Any

import pytest

from shared.redis import job_deserializer, job_serializer


@pytest.mark.parametrize(
    "value",
    [
        {"t": 1, "f": "call_tool", "a": [{"arguments": {"text": "héllo", "n": 3, "x": 0.5}}], "k": {}},
        {"arguments": {"big": 2**70, "negative": -(2**70), "u64": 2**64 - 1}},  # past orjson's 64 bits
        {"text": "12345678901234567890123 in a string"},
    ],
)
def test_round_trip_is_exact(value: dict[str, Any]) -> None:
    assert job_deserializer(job_serializer(value)) == value


def test_an_exception_is_kept_as_its_type_and_message() -> None:
    raw = job_serializer({"r": ValueError("boom")})
    assert job_deserializer(raw) == {"r": {"exception": "ValueError", "message": "boom"}}


def test_other_objects_are_refused() -> None:
    with pytest.raises(TypeError):
        job_serializer({"r": object()})
