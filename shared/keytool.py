"""Key management commands for backend credentials (see shared/security.py):

python -m shared.keytool genkey   # print a new Fernet key
python -m shared.keytool rotate   # re-encrypt stored credentials with the first key of MCPQ_SECRET_KEYS
"""

from __future__ import annotations

import asyncio
import sys

from cryptography.fernet import Fernet

from shared.config import Settings, get_settings
from shared.db import make_engine, make_session_factory
from shared.gateways import service as gateway_service
from shared.security import SecretBox


async def rotate_all(settings: Settings) -> int:
    box = SecretBox.from_settings(settings)
    engine = make_engine(settings, application_name="mcpq-rotate")
    try:
        return await gateway_service.rotate_secrets(make_session_factory(engine), box)
    finally:
        await engine.dispose()


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command == "genkey":
        print(Fernet.generate_key().decode())
        return 0
    if command == "rotate":
        count = asyncio.run(rotate_all(get_settings()))
        print(f"re-encrypted the headers of {count} gateway(s) with the first key")
        return 0
    print("usage: python -m shared.keytool genkey|rotate", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
