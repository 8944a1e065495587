"""Backend credentials at rest and in flight: Fernet (AES-128-CBC + HMAC-SHA256) with key rotation.

`MCPQ_SECRET_KEYS` holds one or more Fernet keys, comma-separated. The first encrypts; every
key decrypts, so a new key can be put in front while data written with the old one is still
readable. `python -m shared.keytool rotate` then re-encrypts every stored gateway's headers
with the first key, after which the old key can be dropped.
"""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.config import Settings


class SecretBox:
    """Encrypts and decrypts small JSON values (gateway headers) with the configured keys."""

    def __init__(self, keys: str) -> None:
        parsed = [k.strip() for k in keys.split(",") if k.strip()]
        if not parsed:
            raise RuntimeError(
                "MCPQ_SECRET_KEYS must be set (generate one with `python -m shared.keytool genkey`)"
            )
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in parsed])
        except ValueError:
            raise RuntimeError("MCPQ_SECRET_KEYS holds a value that is not a Fernet key") from None

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        return cls(settings.secret_keys)

    def seal(self, headers: dict[str, str]) -> str:
        """The ciphertext of `headers`; an empty string for no headers (nothing to hide)."""
        if not headers:
            return ""
        return self._fernet.encrypt(json.dumps(headers, sort_keys=True).encode()).decode()

    def open(self, sealed: str) -> dict[str, str]:
        if not sealed:
            return {}
        try:
            headers: dict[str, str] = json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken:
            # Never echo the ciphertext: it is harmless, but logs should not collect it.
            raise ValueError("backend credentials cannot be decrypted with MCPQ_SECRET_KEYS") from None
        return headers

    def rotate(self, sealed: str) -> str:
        """The same plaintext, encrypted with the first key."""
        return self._fernet.rotate(sealed.encode()).decode() if sealed else ""
