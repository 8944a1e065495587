"""The pub/sub channels between API processes and workers about gateways."""

from __future__ import annotations

from shared.config import Settings


def stale_channel(settings: Settings) -> str:
    """Workers say here that a gateway's backend changed its lists (the message is the gateway id);
    an API process refreshes it (shared/gateways/follow.py)."""
    return settings.key("catalog", "stale")


def gone_channel(settings: Settings) -> str:
    """The API says here that a gateway was deleted, or changed its URL or credentials (the message
    is the gateway id): workers close their sessions to it at once, listen streams included."""
    return settings.key("gateway", "gone")
