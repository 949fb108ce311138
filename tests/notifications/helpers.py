"""Driving the API into notifications, and reading them back."""

from typing import Any

import httpx

from tests.helpers import Account


async def comment(
    client: httpx.AsyncClient, author: Account, slug: str, body: str = "Nice article"
) -> dict[str, Any]:
    response = await client.post(
        f"/articles/{slug}/comments", json={"comment": {"body": body}}, headers=author.headers
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["comment"]
    return result


async def listing(client: httpx.AsyncClient, user: Account, **params: Any) -> dict[str, Any]:
    response = await client.get("/notifications", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"notifications", "notificationsCount", "unreadCount"}, body
    return body


async def notifications(client: httpx.AsyncClient, user: Account) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await listing(client, user, limit=100))["notifications"]
    return items


async def mark_read(client: httpx.AsyncClient, user: Account, body: dict[str, Any]) -> int:
    response = await client.post(
        "/notifications/read", json={"notifications": body}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"unreadCount"}
    count: int = response.json()["unreadCount"]
    return count
