from typing import Any

import httpx


async def test_sync_call_roundtrip(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "hi"}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["result"]["content"] == [{"type": "text", "text": "hi"}]
