import httpx
import pytest

from tests.helpers import errors, register

pytestmark = pytest.mark.anyio


async def set_profile(client: httpx.AsyncClient, headers: dict[str, str], **fields: str) -> None:
    response = await client.put("/user", json={"user": fields}, headers=headers)
    assert response.status_code == 200, response.text


class TestGetProfile:
    async def test_anonymous_sees_profile_not_followed(self, client: httpx.AsyncClient) -> None:
        celeb = await register(client)
        await set_profile(
            client, celeb.headers, bio="I work at statefarm", image="https://i.example.com/c.png"
        )
        response = await client.get(f"/profiles/{celeb.username}")
        assert response.status_code == 200
        assert response.json() == {
            "profile": {
                "username": celeb.username,
                "bio": "I work at statefarm",
                "image": "https://i.example.com/c.png",
                "following": False,
            }
        }

    async def test_new_account_has_empty_bio_and_image(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        profile = (await client.get(f"/profiles/{account.username}")).json()["profile"]
        assert profile["bio"] == ""
        assert profile["image"] == ""

    async def test_authenticated_caller_sees_following_flag(
        self, client: httpx.AsyncClient
    ) -> None:
        fan = await register(client)
        celeb = await register(client)
        before = await client.get(f"/profiles/{celeb.username}", headers=fan.headers)
        assert before.json()["profile"]["following"] is False
        await client.post(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        after = await client.get(f"/profiles/{celeb.username}", headers=fan.headers)
        assert after.status_code == 200
        assert after.json()["profile"]["following"] is True

    async def test_following_flag_is_per_caller(self, client: httpx.AsyncClient) -> None:
        fan = await register(client)
        stranger = await register(client)
        celeb = await register(client)
        await client.post(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        response = await client.get(f"/profiles/{celeb.username}", headers=stranger.headers)
        assert response.json()["profile"]["following"] is False
        anonymous = await client.get(f"/profiles/{celeb.username}")
        assert anonymous.json()["profile"]["following"] is False

    async def test_own_profile_is_not_followed(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.get(f"/profiles/{account.username}", headers=account.headers)
        assert response.status_code == 200
        assert response.json()["profile"]["following"] is False

    async def test_unknown_username_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/profiles/nobody-by-this-name")
        assert response.status_code == 404
        assert errors(response) == {"profile": ["not found"]}

    async def test_lookup_is_case_insensitive(self, client: httpx.AsyncClient) -> None:
        account = await register(client, "MixedCaseName")
        response = await client.get("/profiles/mixedcasename")
        assert response.status_code == 200
        assert response.json()["profile"]["username"] == "MixedCaseName"
        upper = await client.get("/profiles/MIXEDCASENAME")
        assert upper.json()["profile"]["username"] == account.username

    async def test_bad_token_is_401_even_on_public_read(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.get(
            f"/profiles/{account.username}", headers={"Authorization": "Token not.a.jwt"}
        )
        assert response.status_code == 401


class TestFollow:
    async def test_follow_returns_profile_with_following_true(
        self, client: httpx.AsyncClient
    ) -> None:
        fan = await register(client)
        celeb = await register(client)
        response = await client.post(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        assert response.status_code == 200
        assert response.json() == {
            "profile": {"username": celeb.username, "bio": "", "image": "", "following": True}
        }

    async def test_follow_is_idempotent(self, client: httpx.AsyncClient) -> None:
        fan = await register(client)
        celeb = await register(client)
        first = await client.post(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        second = await client.post(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        assert first.status_code == second.status_code == 200
        assert second.json()["profile"]["following"] is True
        profile = await client.get(f"/profiles/{celeb.username}", headers=fan.headers)
        assert profile.json()["profile"]["following"] is True

    async def test_follow_ignores_a_json_body(self, client: httpx.AsyncClient) -> None:
        fan = await register(client)
        celeb = await register(client)
        response = await client.post(
            f"/profiles/{celeb.username}/follow",
            json={"user": {"email": "x"}},
            headers=fan.headers,
        )
        assert response.status_code == 200
        assert response.json()["profile"]["following"] is True

    async def test_follow_by_differently_cased_username(self, client: httpx.AsyncClient) -> None:
        fan = await register(client)
        celeb = await register(client, "CamelCeleb")
        response = await client.post("/profiles/camelceleb/follow", headers=fan.headers)
        assert response.status_code == 200
        assert response.json()["profile"]["username"] == celeb.username
        profile = await client.get(f"/profiles/{celeb.username}", headers=fan.headers)
        assert profile.json()["profile"]["following"] is True

    async def test_following_yourself_is_422(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.post(
            f"/profiles/{account.username}/follow", headers=account.headers
        )
        assert response.status_code == 422
        assert errors(response) == {"profile": ["cannot follow yourself"]}

    async def test_requires_auth(self, client: httpx.AsyncClient) -> None:
        celeb = await register(client)
        response = await client.post(f"/profiles/{celeb.username}/follow")
        assert response.status_code == 401
        assert errors(response)

    async def test_unknown_user_is_404(self, client: httpx.AsyncClient) -> None:
        fan = await register(client)
        response = await client.post("/profiles/nobody-by-this-name/follow", headers=fan.headers)
        assert response.status_code == 404
        assert errors(response) == {"profile": ["not found"]}

    async def test_following_is_one_way(self, client: httpx.AsyncClient) -> None:
        fan = await register(client)
        celeb = await register(client)
        await client.post(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        response = await client.get(f"/profiles/{fan.username}", headers=celeb.headers)
        assert response.json()["profile"]["following"] is False


class TestUnfollow:
    async def test_unfollow_returns_profile_with_following_false(
        self, client: httpx.AsyncClient
    ) -> None:
        fan = await register(client)
        celeb = await register(client)
        await client.post(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        response = await client.delete(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        assert response.status_code == 200
        assert response.json() == {
            "profile": {"username": celeb.username, "bio": "", "image": "", "following": False}
        }
        profile = await client.get(f"/profiles/{celeb.username}", headers=fan.headers)
        assert profile.json()["profile"]["following"] is False

    async def test_unfollow_is_idempotent(self, client: httpx.AsyncClient) -> None:
        fan = await register(client)
        celeb = await register(client)
        await client.post(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        first = await client.delete(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        second = await client.delete(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        assert first.status_code == second.status_code == 200
        assert second.json()["profile"]["following"] is False

    async def test_unfollowing_someone_never_followed_is_fine(
        self, client: httpx.AsyncClient
    ) -> None:
        fan = await register(client)
        celeb = await register(client)
        response = await client.delete(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        assert response.status_code == 200
        assert response.json()["profile"]["following"] is False

    async def test_unfollow_leaves_other_followers_alone(self, client: httpx.AsyncClient) -> None:
        fan = await register(client)
        other_fan = await register(client)
        celeb = await register(client)
        await client.post(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        await client.post(f"/profiles/{celeb.username}/follow", headers=other_fan.headers)
        await client.delete(f"/profiles/{celeb.username}/follow", headers=fan.headers)
        profile = await client.get(f"/profiles/{celeb.username}", headers=other_fan.headers)
        assert profile.json()["profile"]["following"] is True

    async def test_requires_auth(self, client: httpx.AsyncClient) -> None:
        celeb = await register(client)
        response = await client.delete(f"/profiles/{celeb.username}/follow")
        assert response.status_code == 401
        assert errors(response)

    async def test_unknown_user_is_404(self, client: httpx.AsyncClient) -> None:
        fan = await register(client)
        response = await client.delete("/profiles/nobody-by-this-name/follow", headers=fan.headers)
        assert response.status_code == 404
        assert errors(response) == {"profile": ["not found"]}


class TestUsernameInPath:
    @pytest.mark.parametrize(
        ("method", "suffix"), [("GET", ""), ("POST", "/follow"), ("DELETE", "/follow")]
    )
    async def test_nul_character_is_422(
        self, client: httpx.AsyncClient, method: str, suffix: str
    ) -> None:
        account = await register(client)
        response = await client.request(method, f"/profiles/a%00b{suffix}", headers=account.headers)
        assert response.status_code == 422
        assert errors(response) == {"username": ["must not contain NUL characters"]}

    async def test_too_long_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.get(f"/profiles/{'x' * 256}")
        assert response.status_code == 422
        assert errors(response) == {"username": ["is too long (maximum is 255 characters)"]}
