"""Endpoints may not point inside the network: refused at registration and again when a
delivery connects, unless WEBHOOKS_ALLOW_PRIVATE_ADDRESSES allows it. No external DNS is
needed: the hosts are literal addresses and `localhost`."""

from ipaddress import ip_address

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.http import is_public_address
from conduit.platform.settings import Settings
from conduit.webhooks.models import WebhookDestination
from tests.helpers import Account, create_article, errors, register
from tests.jobs import JobRunner
from tests.webhooks.conftest import Receiver, create_webhook, only_delivery, run_webhook_jobs

pytestmark = pytest.mark.anyio

REFUSED_URLS = [
    "http://localhost/hook",
    "http://LOCALHOST:8080/hook",
    "http://127.0.0.1/hook",
    "http://127.1.2.3:9000/hook",
    "http://2130706433/hook",  # 127.0.0.1 written as one number
    "http://0x7f.1/hook",  # and in hexadecimal
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://10.0.0.1/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.1/hook",
    "http://[fd00::1]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://224.0.0.1/hook",
    "http://[ff02::1]/hook",
    "http://0.0.0.0/hook",
    "http://[::]/hook",
    "http://240.0.0.1/hook",
    "http://255.255.255.255/hook",
    "http://100.64.0.1/hook",
    "http://[2002:7f00:1::]/hook",  # 6to4 around 127.0.0.1
    "http://[64:ff9b::a00:1]/hook",  # NAT64 around 10.0.0.1
    "https://127.0.0.1:8443/hook",
]


@pytest.fixture
def no_private_addresses(settings: Settings) -> Settings:
    settings.webhooks_allow_private_addresses = False
    return settings


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> Account:
    return await register(client)


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_registering_an_internal_address_is_refused(
    client: httpx.AsyncClient, owner: Account, no_private_addresses: Settings, url: str
) -> None:
    response = await client.post(
        "/webhooks",
        json={"webhook": {"url": url, "events": ["user.followed"]}},
        headers=owner.headers,
    )
    assert response.status_code == 422, response.text
    assert errors(response) == {
        "url": [
            "must not point to a loopback, private, link-local, multicast, reserved or "
            "unspecified address"
        ]
    }


@pytest.mark.parametrize(
    "url", ["https://93.184.215.14/hook", "http://[2606:4700:4700::1111]:8080/hook"]
)
async def test_a_public_address_is_accepted(
    client: httpx.AsyncClient, owner: Account, no_private_addresses: Settings, url: str
) -> None:
    await create_webhook(client, owner, url)


async def test_an_unresolvable_host_is_refused(
    client: httpx.AsyncClient, owner: Account, no_private_addresses: Settings
) -> None:
    response = await client.post(
        "/webhooks",
        json={"webhook": {"url": "https://no-such-host.invalid/", "events": ["user.followed"]}},
        headers=owner.headers,
    )
    assert response.status_code == 422
    assert errors(response) == {"url": ["has a host that could not be resolved"]}


async def test_moving_an_endpoint_inside_is_refused(
    client: httpx.AsyncClient, owner: Account, no_private_addresses: Settings
) -> None:
    webhook = await create_webhook(client, owner, "https://93.184.215.14/hook")
    response = await client.put(
        f"/webhooks/{webhook['id']}",
        json={"webhook": {"url": "http://[::ffff:10.1.1.1]/"}},
        headers=owner.headers,
    )
    assert response.status_code == 422
    assert "url" in errors(response)


async def test_the_operator_setting_allows_private_addresses(
    client: httpx.AsyncClient, owner: Account, settings: Settings
) -> None:
    assert settings.webhooks_allow_private_addresses
    for url in ("http://localhost:9/hook", "http://10.0.0.1/hook", "http://[::1]/hook"):
        await create_webhook(client, owner, url)


async def test_a_delivery_is_refused_when_it_would_connect_inside(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    owner: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    """Registered while private addresses were allowed (as if the name had since been pointed
    at one): the connection itself is refused, and the delivery fails without retries."""
    webhook = await create_webhook(client, owner, receiver.url().replace("127.0.0.1", "localhost"))
    settings.webhooks_allow_private_addresses = False
    await create_article(client, owner)
    await run_webhook_jobs(jobs)

    assert receiver.received() == []
    delivery = await only_delivery(client, owner, webhook["id"])
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == 1
    assert "must not reach" in delivery["lastError"]
    assert delivery["nextAttemptAt"] is None
    # A refusal says nothing about the destination's health.
    assert await session.scalar(select(func.count()).select_from(WebhookDestination)) == 0


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("93.184.215.14", True),
        ("2606:4700:4700::1111", True),
        ("2002:5db8:d70e::1", True),  # 6to4 around a public address
        ("64:ff9b::808:808", True),  # NAT64 around 8.8.8.8
        ("::ffff:8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.255.255.255", False),
        ("172.31.0.1", False),
        ("192.168.0.1", False),
        ("100.100.100.100", False),
        ("169.254.0.1", False),
        ("224.0.0.251", False),
        ("239.255.255.250", False),
        ("0.0.0.0", False),  # noqa: S104 (an address to classify, not to bind)
        ("240.0.0.1", False),
        ("192.0.2.1", False),
        ("198.18.0.1", False),
        ("::1", False),
        ("::", False),
        ("::ffff:192.168.0.1", False),
        ("fc00::1", False),
        ("fe80::1", False),
        ("ff0e::1", False),
        ("2001:db8::1", False),
        ("2002:a00:1::", False),
        ("64:ff9b::7f00:1", False),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # Teredo
    ],
)
async def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(ip_address(address)) is public
