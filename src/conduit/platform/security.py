"""Password hashing, access tokens and refresh tokens.

Passwords are hashed with argon2id at the library's recommended cost, off the event loop, in
a pool of one thread per core that runs at a lower CPU priority than the requests.
Access tokens are HS256 JWTs whose subject is the user id, so they survive username and email
changes; their `ver` claim is the account's token version when they were issued, so bumping
the version revokes them all. Refresh tokens are opaque random strings, stored only as their
SHA-256 digest: with 256 bits of entropy they cannot be guessed, so a slow hash adds nothing.
"""

import asyncio
import contextlib
import functools
import hashlib
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeGuard, TypeVar

import jwt
from fastapi.security import APIKeyHeader
from pwdlib import PasswordHash

from conduit.platform.errors import Unauthorized

_hasher = PasswordHash.recommended()
# Verified against when the account does not exist, so a miss costs as much as a wrong password.
_DUMMY_HASH = _hasher.hash("conduit-timing-equaliser")

JWT_ALGORITHM = "HS256"
MAX_USER_ID = 2**63 - 1
_USER_ID = re.compile(r"[1-9][0-9]{0,18}")
ACCESS_TOKEN_TYPE = "access"  # noqa: S105 (a claim value, not a secret)
MAX_TOKEN_VERSION = 2**31 - 1
REFRESH_TOKEN_BYTES = 32

authorization_header = APIKeyHeader(
    name="Authorization",
    scheme_name="Token",
    description="`Token <jwt>` as RealWorld specifies; `Bearer <jwt>` is accepted too.",
    auto_error=False,
)


# A hash takes a core for about a fifth of a second. At the normal priority a steady stream of
# logins took that time out of the latency of every concurrent request; niced, the hashing
# threads get a smaller share of a contended core. SCHED_IDLE shielded requests no better
# when measured, and would starve logins outright while the server is busy.
HASHING_NICENESS = 10
MAX_NICENESS = 19
_T = TypeVar("_T")


def _lower_this_threads_priority() -> None:
    # Only Linux takes a thread id where it expects a process id; elsewhere the call could
    # renice another process, so hashing runs at the normal priority there.
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + HASHING_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness, MAX_NICENESS))


@functools.cache
def _hashing_pool() -> ThreadPoolExecutor:
    # One thread per core: more concurrent hashes than cores only queue for the CPU, each
    # holding its 64 MiB of argon2 memory.
    return ThreadPoolExecutor(
        max_workers=os.cpu_count() or 1,
        thread_name_prefix="password-hashing",
        initializer=_lower_this_threads_priority,
    )


async def _in_hashing_pool(work: Callable[..., _T], *args: str) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_hashing_pool(), work, *args)


async def hash_password(password: str) -> str:
    return await _in_hashing_pool(_hasher.hash, password)


async def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """Check a password; the second value is a new hash when the stored one is outdated."""
    if password_hash is None:
        await _in_hashing_pool(_hasher.verify, password, _DUMMY_HASH)
        return False, None
    return await _in_hashing_pool(_hasher.verify_and_update, password, password_hash)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    token_version: int


def create_access_token(user_id: int, *, token_version: int, secret: str, ttl_seconds: int) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "typ": ACCESS_TOKEN_TYPE,
        "ver": token_version,
        "iat": now,
        "exp": now + timedelta(seconds=ttl_seconds),
    }
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def token_from_header(header_value: str | None) -> str | None:
    """The JWT from `Token <jwt>` or `Bearer <jwt>`; None when the header is absent."""
    if header_value is None:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in {"token", "bearer"} or not token or " " in token:
        raise Unauthorized("must be 'Token <jwt>' or 'Bearer <jwt>'", field="authorization")
    return token


# Every authenticated request reads its token, twice with rate limits on (they are keyed by the
# caller's id), and PyJWT's decoding and checks cost about a tenth of the CPU of a request that
# loads its caller and answers. What a valid token says cannot change before it expires (a
# revocation is checked against the account on every request, not in the token), so the claims
# of tokens already verified are remembered until their `exp`; a token that failed is never kept.
MAX_REMEMBERED_TOKENS = 10_000
_verified: dict[tuple[str, str], tuple[AccessClaims, int]] = {}


def read_access_token(token: str, *, secret: str) -> AccessClaims:
    key = (token, secret)
    remembered = _verified.get(key)
    # Expired from the instant `exp` names, as PyJWT judges it.
    if remembered is not None and remembered[1] > time.time():
        return remembered[0]
    claims, expires_at = _verify_access_token(token, secret=secret)
    if len(_verified) >= MAX_REMEMBERED_TOKENS:
        _verified.clear()
    _verified[key] = (claims, expires_at)
    return claims


def _verify_access_token(token: str, *, secret: str) -> tuple[AccessClaims, int]:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["sub", "exp", "iat"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("has expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("is invalid") from None
    subject = claims.get("sub")
    # Tokens issued before versions existed carry none; they belong to version 0.
    version = claims.get("ver", 0)
    if (
        claims.get("typ") != ACCESS_TOKEN_TYPE
        or not _is_user_id(subject)
        or not _is_token_version(version)
    ):
        raise Unauthorized("is invalid")
    return AccessClaims(user_id=int(subject), token_version=version), int(claims["exp"])


def _is_user_id(subject: object) -> TypeGuard[str]:
    """A positive BIGINT written plainly, as create_access_token writes it."""
    return (
        isinstance(subject, str)
        and _USER_ID.fullmatch(subject) is not None
        and int(subject) <= MAX_USER_ID
    )


def _is_token_version(version: object) -> TypeGuard[int]:
    return type(version) is int and 0 <= version <= MAX_TOKEN_VERSION


def new_refresh_token() -> str:
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
