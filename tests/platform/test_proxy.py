"""Behind a TLS-terminating proxy: `X-Forwarded-*` counts only when the peer is trusted."""

from pathlib import Path

import httpx

from tests.platform.server import serving

FORWARDED_TLS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}


def test_hsts_follows_the_clients_tls_through_a_trusted_proxy(
    server_url: str, tmp_path: Path
) -> None:
    with serving(server_url, tmp_path, env={"TRUSTED_PROXIES": "127.0.0.1/32"}) as server:
        forwarded = httpx.get(f"{server.url}/api/tags", headers=FORWARDED_TLS)
        assert "strict-transport-security" in forwarded.headers
        direct = httpx.get(f"{server.url}/api/tags")
        assert "strict-transport-security" not in direct.headers


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    server_url: str, tmp_path: Path
) -> None:
    with serving(server_url, tmp_path) as server:
        response = httpx.get(f"{server.url}/api/tags", headers=FORWARDED_TLS)
        assert "strict-transport-security" not in response.headers
