import os
import sys
import threading

import pytest

from conduit.platform import security
from conduit.platform.errors import Unauthorized

pytestmark = [pytest.mark.anyio, pytest.mark.real_password_hashing]


async def test_passwords_are_hashed_with_argon2id_at_the_recommended_cost() -> None:
    hashed = await security.hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert await security.verify_password("correct horse battery", hashed) == (True, None)
    assert (await security.verify_password("wrong", hashed))[0] is False


async def test_an_outdated_hash_is_replaced_on_login() -> None:
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    weak = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))
    valid, updated = await security.verify_password("pw-123456", weak.hash("pw-123456"))
    assert valid
    assert updated is not None
    assert updated.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


async def test_unknown_account_still_costs_a_verification() -> None:
    assert await security.verify_password("anything", None) == (False, None)


@pytest.mark.parametrize(
    ("header", "token"),
    [("Token abc", "abc"), ("Bearer abc", "abc"), ("token abc", "abc"), ("  Token abc ", "abc")],
)
def test_reads_both_schemes(header: str, token: str) -> None:
    assert security.token_from_header(header) == token


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads are niced on Linux")
async def test_passwords_are_hashed_at_a_lower_priority_than_the_event_loop() -> None:
    def niceness_of_this_thread() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    event_loop_niceness = niceness_of_this_thread()
    hashing_niceness = await security._in_hashing_pool(niceness_of_this_thread)
    expected = min(event_loop_niceness + security.HASHING_NICENESS, security.MAX_NICENESS)
    assert hashing_niceness == expected


class TestRememberedTokens:
    SECRET = "a-secret-of-sufficient-length-for-hs256-0123456789"

    def token(self, user_id: int) -> str:
        return security.create_access_token(
            user_id, token_version=3, secret=self.SECRET, ttl_seconds=600
        )

    def test_a_token_read_again_says_the_same(self) -> None:
        token = self.token(7)
        first = security.read_access_token(token, secret=self.SECRET)
        assert security.read_access_token(token, secret=self.SECRET) == first
        assert first == security.AccessClaims(user_id=7, token_version=3)

    def test_a_token_remembered_under_one_secret_is_invalid_under_another(self) -> None:
        token = self.token(8)
        security.read_access_token(token, secret=self.SECRET)
        with pytest.raises(Unauthorized, match="is invalid"):
            security.read_access_token(token, secret="another-secret-of-sufficient-length-0123")

    def test_a_tampered_copy_of_a_remembered_token_is_invalid(self) -> None:
        token = self.token(9)
        security.read_access_token(token, secret=self.SECRET)
        header, payload, signature = token.split(".")
        tampered = ".".join(
            (header, payload, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB"))
        )
        with pytest.raises(Unauthorized, match="is invalid"):
            security.read_access_token(tampered, secret=self.SECRET)

    def test_the_memory_is_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(security, "MAX_REMEMBERED_TOKENS", 2)
        tokens = [self.token(user_id) for user_id in (11, 12, 13, 14, 15)]
        for user_id, token in enumerate(tokens, start=11):
            assert security.read_access_token(token, secret=self.SECRET).user_id == user_id
            assert len(security._verified) <= 2
