"""The live console in a real browser: Debian's chromium driven by playwright.

The page loads, the token prompt takes a token (and asks again for a refused one), a running
job appears, its progress moves, and the cancel button cancels it. With MCPQ_CONSOLE_SCREENSHOT
set to a path, the page with its live jobs is saved there (docs/console.png is made so).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Worker

from tests.backends import Backends
from tests.conftest import unique

# Debian's package; `playwright install` downloads its own browsers and cannot run here.
CHROMIUM = os.environ.get("MCPQ_CHROMIUM", "/usr/bin/chromium")

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (it is in the dev extra)"
)
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"no chromium at {CHROMIUM}: `apt-get install chromium` (.ci/browser-deps does it)",
)


@pytest.fixture
async def member(
    client: httpx.AsyncClient, backends: Backends, worker: Worker
) -> AsyncIterator[dict[str, str]]:
    """A team of its own with a gateway on the stateful backend and a member token."""
    team = await client.post("/v1/teams", json={"name": unique("console")})
    assert team.status_code == 201, team.text
    team_id = team.json()["id"]
    gateway = await client.post(
        "/v1/gateways", json={"name": unique("demo"), "url": backends.urls["stateful"], "team": team_id}
    )
    assert gateway.status_code == 201, gateway.text
    token = await client.post("/v1/tokens", json={"name": unique("tok"), "team": team_id, "role": "member"})
    assert token.status_code == 201, token.text
    yield {"gateway": gateway.json()["name"], "token": token.json()["token"]}
    await client.delete(f"/v1/teams/{team_id}")


async def submit(
    http: httpx.AsyncClient, member: dict[str, str], tool: str, arguments: dict[str, Any]
) -> str:
    response = await http.post(
        f"/v1/tools/{member['gateway']}.{tool}/jobs",
        json={"arguments": arguments},
        headers={"Authorization": f"Bearer {member['token']}"},
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def test_console_shows_live_jobs_and_cancels_one(
    client: httpx.AsyncClient, backends: Backends, member: dict[str, str], api_url: str, tmp_path: Path
) -> None:
    auth = {"Authorization": f"Bearer {member['token']}"}
    # Some finished jobs for the recent list: two completed, one failed.
    for text in ("hello", "world"):
        called = await client.post(
            f"/v1/tools/{member['gateway']}.echo/call", json={"arguments": {"text": text}}, headers=auth
        )
        assert called.status_code == 200, called.text
    failed = await client.post(
        f"/v1/tools/{member['gateway']}.fail/call", json={"arguments": {"message": "boom"}}, headers=auth
    )
    assert failed.status_code == 200, failed.text  # a tool error is a completed call with isError
    key = uuid.uuid4().hex
    gate = backends.gate(key)
    held = await submit(client, member, "hold", {"key": key})
    sleeper = await submit(client, member, "sleep", {"seconds": 20})
    try:
        async with playwright_api.async_playwright() as driver:
            browser = await driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                await use_console(page, api_url, member["token"], held, sleeper, tmp_path)
            finally:
                await browser.close()
        record = await client.get(f"/v1/jobs/{held}")
        assert record.json()["status"] == "cancelled"
    finally:
        gate.release()
        await client.delete(f"/v1/jobs/{sleeper}")


async def use_console(page: Any, api_url: str, token: str, held: str, sleeper: str, tmp_path: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{api_url}/ui/")

    # A refused token: the prompt comes back, saying why.
    await page.fill("#token", "not-a-token")
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#login:visible")
    assert "refused" in await page.inner_text("#notice")

    await page.fill("#token", token)
    await page.click("#login button[type=submit]")
    running_hold = f'#active-jobs tr[data-job-id="{held}"][data-status="running"]'
    await page.wait_for_selector(running_hold, timeout=10_000)
    assert int(await page.inner_text("#queue-running")) >= 2  # the held job and the sleeper

    # The sleep tool reports progress every 0.1 s; the console shows it moving between polls.
    progress = f'#active-jobs tr[data-job-id="{sleeper}"] .progress-text'
    await page.wait_for_selector(progress, timeout=10_000)
    first = await page.inner_text(progress)
    await page.wait_for_function(
        "([selector, seen]) => document.querySelector(selector)?.textContent !== seen",
        arg=[progress, first],
        timeout=10_000,
    )
    await page.wait_for_selector('#recent-jobs tr[data-status="completed"]')
    await page.wait_for_selector("#gateways tbody tr")

    await page.click(f"{running_hold} button.cancel")
    await page.wait_for_selector(
        f'#recent-jobs tr[data-job-id="{held}"][data-status="cancelled"]', timeout=10_000
    )
    assert await page.locator(f'#active-jobs tr[data-job-id="{held}"]').count() == 0
    # Its detail shows the error.
    await page.click(f'#recent-jobs tr[data-job-id="{held}"] td.item')
    await page.wait_for_function(
        "id => document.querySelector('#detail-id').textContent === id", arg=held, timeout=5_000
    )
    assert "cancelled" in await page.inner_text("#detail-outcome")
    # The sleeper still runs: the page with a live job, a cancelled one and finished ones.
    screenshot = Path(os.environ.get("MCPQ_CONSOLE_SCREENSHOT") or tmp_path / "console.png")
    await page.screenshot(path=str(screenshot), full_page=True)
    assert errors == []
