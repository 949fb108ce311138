"""Property tests of every operation in the app's own OpenAPI schema.

The hand-written tests check the inputs someone thought of. Here schemathesis generates requests,
valid and invalid, for each operation, with path parameters that sometimes name real rows, sent
anonymously and signed in. Whatever arrives, the app must not answer with a server error, and
every error must have the RealWorld shape `{"errors": {"<field>": ["<message>", ...]}}`.
"""

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.filters import HasAPIOperation

from conduit.app import create_app
from conduit.platform.settings import Environment, Settings
from tests.helpers import Account, create_article, register

ORIGIN = "http://conduit.test"
ROW_PLACEHOLDERS = {
    "username": ["existing_signed_in_user", "existing_other_user"],
    "slug": ["existing_article"],
    "id": ["existing_comment"],
}
# Examples of one operation share its test's database transaction: a row one request creates is
# there for the next, as it would be on a real server.
deterministic_and_bounded = settings(
    max_examples=20,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Built at import rather than from the `app` fixture: `schemathesis.pytest.from_fixture` fails on
# pytest 9.2, which no longer has the `Function._nodeid` it rewrites.
api_schema = schemathesis.openapi.from_dict(
    create_app(Settings(_env_file=None, environment=Environment.test)).openapi()
)


@api_schema.hook("flatmap_path_parameters")
def sometimes_name_an_existing_row(
    _: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    if not path_parameters:
        return st.just(path_parameters)
    return st.fixed_dictionaries(
        {
            name: st.sampled_from([value, *ROW_PLACEHOLDERS.get(name, [])])
            for name, value in path_parameters.items()
        }
    )


def accepts_a_token(context: HasAPIOperation) -> bool:
    return bool(context.operation.definition.raw.get("security"))


def is_endless(context: HasAPIOperation) -> bool:
    """The notification stream answers a valid request with a response that never ends, which
    a property test cannot wait for; its errors are tested in tests/notifications."""
    return context.operation.path == "/api/notifications/stream"


public_operations = api_schema.exclude(func=accepts_a_token).exclude(func=is_endless)
operations_accepting_a_token = api_schema.include(func=accepts_a_token).exclude(func=is_endless)


@dataclass(frozen=True)
class ExistingRows:
    user: Account
    other_user: Account
    slug: str
    comment_id: int

    def resolve(self, value: Any) -> Any:
        """The real value behind a row placeholder; any other value as it is."""
        rows = {
            "existing_signed_in_user": self.user.username,
            "existing_other_user": self.other_user.username,
            "existing_article": self.slug,
            "existing_comment": self.comment_id,
        }
        return rows.get(value, value) if isinstance(value, str) else value


@pytest.fixture
async def existing_rows(client: httpx.AsyncClient) -> ExistingRows:
    """A user with a tagged article and a comment on it, and a second user to follow."""
    user = await register(client)
    other_user = await register(client)
    article = await create_article(client, user, tagList=["fuzzing"])
    response = await client.post(
        f"/articles/{article['slug']}/comments",
        json={"comment": {"body": "A comment"}},
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    return ExistingRows(user, other_user, article["slug"], response.json()["comment"]["id"])


async def send(
    client: httpx.AsyncClient,
    case: schemathesis.Case,
    existing_rows: ExistingRows,
    authorization: dict[str, str],
) -> httpx.Response:
    case.path_parameters = {
        name: existing_rows.resolve(value) for name, value in (case.path_parameters or {}).items()
    }
    prepared = case.as_transport_kwargs(base_url=ORIGIN, headers=authorization)
    body = {"json": prepared["json"]} if "json" in prepared else {"content": prepared.get("data")}
    return await client.request(
        prepared["method"],
        prepared["url"],
        params=prepared.get("params"),
        headers=dict(prepared["headers"]),
        **body,
    )


def has_error_shape(body: object) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"errors"}
        and isinstance(body["errors"], dict)
        and all(
            isinstance(field, str)
            and isinstance(messages, list)
            and bool(messages)
            and all(isinstance(message, str) for message in messages)
            for field, messages in body["errors"].items()
        )
    )


def assert_no_server_error_and_errors_in_shape(response: httpx.Response) -> None:
    request = response.request
    reproduction = (
        f"{request.method} {request.url}\n"
        f"headers: {dict(request.headers)}\n"
        f"body: {request.content!r}\n"
        f"-> {response.status_code} {response.text}"
    )
    assert response.status_code < 500, reproduction
    if response.status_code >= 400:
        try:
            body = response.json()
        except json.JSONDecodeError:
            body = None
        assert has_error_shape(body), reproduction


@pytest.fixture
async def app_loop(anyio_backend: str) -> asyncio.AbstractEventLoop:
    """The event loop of the app's database session, which the tests send their requests on.

    The tests are synchronous because schemathesis runs an async test on whatever loop asyncio
    calls current, a new one once any `asyncio.run()` elsewhere in the suite has cleared it.
    """
    return asyncio.get_running_loop()


@pytest.fixture(params=["anonymous", "signed_in"])
def authorization(request: pytest.FixtureRequest, existing_rows: ExistingRows) -> dict[str, str]:
    """Signed in, the existing user's token. Anonymous, the Authorization header schemathesis
    generates, if any: absent, empty or junk, never a valid token."""
    return existing_rows.user.headers if request.param == "signed_in" else {}


@public_operations.parametrize()
@pytest.mark.parametrize("authorization", ["anonymous"], indirect=True)
@deterministic_and_bounded
def test_public_operation(
    case: schemathesis.Case,
    app_loop: asyncio.AbstractEventLoop,
    client: httpx.AsyncClient,
    existing_rows: ExistingRows,
    authorization: dict[str, str],
) -> None:
    response = app_loop.run_until_complete(send(client, case, existing_rows, authorization))
    assert_no_server_error_and_errors_in_shape(response)


@operations_accepting_a_token.parametrize()
@deterministic_and_bounded
def test_operation_accepting_a_token(
    case: schemathesis.Case,
    app_loop: asyncio.AbstractEventLoop,
    client: httpx.AsyncClient,
    existing_rows: ExistingRows,
    authorization: dict[str, str],
) -> None:
    response = app_loop.run_until_complete(send(client, case, existing_rows, authorization))
    assert_no_server_error_and_errors_in_shape(response)
