"""What /openapi.json promises about errors, checked on the schema itself (the fuzz run checks the
answers against it: tests/test_fuzz_openapi.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

ERROR_SCHEMAS = {"#/components/schemas/ErrorBody", "#/components/schemas/ValidationErrorBody"}


@pytest.fixture(scope="module")
async def schema(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def operations(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def test_fastapis_own_validation_shape_is_not_documented(schema: dict[str, Any]) -> None:
    """We never send {"detail": [...]}: our handler renders {"error", "detail", "errors"}."""
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_every_error_answer_has_the_json_error_shape(schema: dict[str, Any]) -> None:
    for name, operation in operations(schema):
        for status, response in operation["responses"].items():
            if int(status) < 400 or name.startswith("GET /ready"):
                continue
            ref = response["content"]["application/json"]["schema"]["$ref"]
            assert ref in ERROR_SCHEMAS, (name, status)


def test_every_authenticated_route_documents_401_422_503(schema: dict[str, Any]) -> None:
    for name, operation in operations(schema):
        if " /v1/" in name:
            assert {"401", "422", "503"} <= set(operation["responses"]), name
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]


def test_every_route_with_a_body_documents_413_415_422(schema: dict[str, Any]) -> None:
    with_body = [(name, op) for name, op in operations(schema) if "requestBody" in op]
    assert len(with_body) >= 10
    for name, operation in with_body:
        assert {"413", "415", "422"} <= set(operation["responses"]), name


def test_sync_calls_document_the_job_answers(schema: dict[str, Any]) -> None:
    for path in ("/v1/tools/{ref}/call", "/v1/resources/{ref}/read", "/v1/prompts/{ref}/render"):
        responses = schema["paths"][path]["post"]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobCompleted")
        assert responses["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobAccepted")
        assert "Location" in responses["202"]["headers"]
        assert {"409", "429", "502", "504"} <= set(responses), path
