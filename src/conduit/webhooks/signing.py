"""Endpoint secrets and the signature every delivery carries.

`Webhook-Signature: v1=<hex HMAC-SHA256>` with the endpoint's secret (its UTF-8 bytes, as
shown once at creation) as the key, over `"{Webhook-Timestamp}.{raw body}"`. Signing the
timestamp with the body lets receivers refuse replays of an old delivery.
"""

import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 (a marker that makes secrets recognisable, not one)
SIGNATURE_VERSION = "v1"


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"
