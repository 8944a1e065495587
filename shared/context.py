"""What services need from the running process, built once in the API lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import Settings
from shared.db import SessionFactory
from shared.jobs.service import JobQueue
from shared.tools.cache import ToolCache


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    session_factory: SessionFactory
    read_session_factory: SessionFactory
    queue: JobQueue
    tool_cache: ToolCache

    @property
    def catalog_channel(self) -> str:
        return self.settings.key("catalog", "changed")

    async def catalog_changed(self) -> None:
        """Tell every API process (this one included) that cached tools may be stale."""
        self.tool_cache.clear()
        await self.queue.redis.publish(self.catalog_channel, b"1")
