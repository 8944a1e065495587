"""schemathesis over every operation of /openapi.json, on a real stack (API under uvicorn, a worker,
the test MCP backend behind the gateway `demo`), as the platform admin and as a team admin: no
500, and every answer's status, content type, headers and body as the schema documents them.
`make fuzz` runs the same with more examples per operation (tests/fuzz/stack.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.stack import fuzz

# Bounded so the run fits in CI: about a minute for both identities.
MAX_EXAMPLES = 10


@pytest.mark.timeout(900)
async def test_every_operation_answers_as_documented(tmp_path: Path) -> None:
    outcomes = await fuzz(MAX_EXAMPLES, tmp_path)
    for who, outcome in outcomes.items():
        print(f"{who}: {outcome.line()}")
        # schemathesis' own verdict (its report is in the captured output above).
        assert outcome.exit_code == 0, f"{who}: {outcome.line()}"
        assert outcome.failed_checks == 0
        assert 500 not in outcome.total()
        # Every operation was exercised, and the documented examples got past validation to the
        # real item (a call completed, or accepted if the busy machine took longer than the wait).
        answered = {label for label in outcome.statuses if label != "Stateful tests"}
        assert len(answered) == outcome.operations, sorted(answered)
        calls = outcome.statuses["POST /v1/tools/{ref}/call"]
        assert calls[200] + calls[202] >= 1, outcome.statuses
