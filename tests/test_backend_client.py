"""The drain's HTTP client against the reference backend served in-process, over real HTTP.

What each answer becomes (delivered, a refusal of every order, a per-order
refusal, transient), the credentials (a bearer file read again when it changes,
an OAuth2 token renewed after a 401 and the order retried once), the headers
taken from the environment, and secrets kept out of every message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest
from aiohttp.test_utils import TestServer

from flashgate.errors import ConfigError
from flashgate.secret import Secret
from flashgate.settings import DrainSettings, load_settings
from order_consumer.backend_auth import BearerToken, OAuth2ClientCredentials
from order_consumer.backend_client import BackendClient, Connection, connection_for, shown_url
from order_consumer.errors import BackendRefuses, BackendUnavailable, OrderRejected
from reference_backend.app import BACKEND_KEY, create_app
from reference_backend.config import BackendConfig

T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def with_backend(
    config: BackendConfig,
    scenario: Callable[[TestServer], Awaitable[T]],
    clock: Clock | None = None,
) -> T:
    async def run() -> T:
        app = create_app(config, monotonic=clock or Clock())
        server = TestServer(app)
        async with server:
            return await scenario(server)

    return asyncio.run(run())


def body(order_id: str, **attributes: str) -> bytes:
    return json.dumps({"order_id": order_id, "attributes": attributes}).encode()


def test_each_answer_is_classified(tmp_path: Path) -> None:
    config = BackendConfig(db_path=tmp_path / "db.sqlite3", reject_attribute="bad")

    async def scenario(server: TestServer) -> None:
        backend = server.app[BACKEND_KEY]
        async with BackendClient(Connection(str(server.make_url("/orders"))), 4, 5) as client:
            await client.deliver("o-1", body("o-1"))
            with pytest.raises(OrderRejected) as rejected:
                await client.deliver("o-2", body("o-2", bad="1"))
            assert rejected.value.status == 422
            for status in (401, 403, 404, 410):
                backend.faults.refuse(status, 60)
                with pytest.raises(BackendRefuses) as refused:
                    await client.deliver("o-3", body("o-3"))
                assert refused.value.refusal_status == status
                assert f"injected {status}" in refused.value.message
            backend.faults.refuse(0, 0)
            backend.faults.update(outage_seconds=5)
            with pytest.raises(BackendUnavailable) as down:
                await client.deliver("o-3", body("o-3"))
            assert not isinstance(down.value, BackendRefuses) and down.value.status == 503
        async with BackendClient(Connection(str(server.make_url("/nope"))), 4, 5) as client:
            with pytest.raises(BackendRefuses) as moved:
                await client.deliver("o-4", body("o-4"))
            assert moved.value.refusal_status == 404

    with_backend(config, scenario)


def test_a_bearer_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    config = BackendConfig(db_path=tmp_path / "db.sqlite3", require_token="second")
    token_file = tmp_path / "token"
    token_file.write_text("first\n")

    async def scenario(server: TestServer) -> None:
        credentials = BearerToken(Secret(), str(token_file))
        connection = Connection(str(server.make_url("/orders")), credentials=credentials)
        async with BackendClient(connection, 4, 5) as client:
            with pytest.raises(BackendRefuses) as refused:
                await client.deliver("o-1", body("o-1"))
            assert refused.value.refusal_status == 401 and "first" not in str(refused.value)
            token_file.write_text("second\n")  # the mounted secret is rotated
            # The 401's renewal reads the file again at once: no wait for the next check.
            await client.deliver("o-1", body("o-1"))

    with_backend(config, scenario)


def test_oauth2_token_is_reused_renewed_before_expiry_and_after_a_401(tmp_path: Path) -> None:
    backend_clock, drain_clock = Clock(), Clock()
    config = BackendConfig(
        db_path=tmp_path / "db.sqlite3", oauth2_client="drain:s3cret", token_ttl_s=10
    )

    async def scenario(server: TestServer) -> None:
        tokens = server.app[BACKEND_KEY].tokens
        credentials = OAuth2ClientCredentials(
            str(server.make_url("/oauth/token")), "drain", Secret("s3cret"), "", "orders", 5,
            clock=drain_clock,
        )  # fmt: skip
        connection = Connection(str(server.make_url("/orders")), credentials=credentials)
        async with BackendClient(connection, 4, 5) as client:
            await asyncio.gather(*(client.deliver(f"o-{i}", body(f"o-{i}")) for i in range(8)))
            assert tokens.issued_total == 1  # one fetch shared by concurrent deliveries
            drain_clock.now += 8.5  # past 80 % of its life: fetched again before it expires
            await client.deliver("o-8", body("o-8"))
            assert tokens.issued_total == 2
            # The backend's clock runs ahead: it calls the token expired while the drain
            # thinks it fresh. The 401 renews the token and the order goes, once.
            backend_clock.now += 10
            await client.deliver("o-9", body("o-9"))
            assert tokens.issued_total == 3
            assert server.app[BACKEND_KEY].store.stats().orders == 10

    with_backend(config, scenario, clock=backend_clock)


def test_a_wrong_oauth2_secret_is_a_refusal_naming_the_token_endpoint(tmp_path: Path) -> None:
    config = BackendConfig(db_path=tmp_path / "db.sqlite3", oauth2_client="drain:right")

    async def scenario(server: TestServer) -> None:
        credentials = OAuth2ClientCredentials(
            str(server.make_url("/oauth/token")), "drain", Secret("wrong"), "", "", 5
        )
        connection = Connection(str(server.make_url("/orders")), credentials=credentials)
        async with BackendClient(connection, 4, 5) as client:
            with pytest.raises(BackendRefuses) as refused:
                await client.deliver("o-1", body("o-1"))
        assert refused.value.refusal_status == 401
        assert "token endpoint" in refused.value.message and "wrong" not in str(refused.value)

    with_backend(config, scenario)


def test_headers_come_from_the_environment_and_a_missing_one_stops_the_start(
    tmp_path: Path,
) -> None:
    settings_file = tmp_path / "flashgate.toml"
    settings_file.write_text(
        '[drain]\nbackend_url = "https://orders.example/api/v2/order-intake"\n'
        '[drain.backend_headers]\nX-Api-Key = "${ORDER_API_KEY}"\nX-Caller = "flashgate"\n'
    )
    drain = load_settings(settings_file, environ={}).drain
    connection = connection_for(drain, environ={"ORDER_API_KEY": "k-123"})
    assert connection.url == "https://orders.example/api/v2/order-intake"
    assert dict(connection.headers) == {"X-Api-Key": "k-123", "X-Caller": "flashgate"}
    with pytest.raises(ConfigError, match=r"X-Api-Key: \$\{ORDER_API_KEY\} is not set"):
        connection_for(drain, environ={})


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"backend_url": "ftp://x/orders"}, "http:// or https://"),
        ({"backend_auth": "bearer"}, "needs one of backend_token"),
        ({"backend_client_cert": "c.pem", "backend_url": "https://x/o"}, "go together"),
        ({"backend_ca_file": "ca.pem"}, "need an https:// URL"),
        ({"backend_auth": "oauth2", "backend_oauth2_token_url": "https://a/t"}, "client_id"),
        ({"backend_headers": {"Idempotency-Key": "x"}}, "set by the drain itself"),
        ({"backend_token_file": "/t"}, "only with backend_auth = bearer"),
    ],
)
def test_combinations_that_cannot_work_are_refused(
    settings: dict[str, object], complaint: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=complaint):
        msgspec.convert(settings, DrainSettings)


def test_secrets_stay_out_of_the_settings_repr() -> None:
    env = {
        "FLASHGATE_DRAIN_BACKEND_AUTH": "oauth2",
        "FLASHGATE_DRAIN_BACKEND_OAUTH2_TOKEN_URL": "https://auth.example/token",
        "FLASHGATE_DRAIN_BACKEND_OAUTH2_CLIENT_ID": "drain",
        "FLASHGATE_DRAIN_BACKEND_OAUTH2_CLIENT_SECRET": "very-secret-value",
    }
    drain = load_settings(environ=env).drain
    assert "very-secret-value" not in repr(drain)
    assert drain.backend_oauth2_client_secret.reveal() == "very-secret-value"


def test_a_password_in_the_backend_url_stays_out_of_the_log_line() -> None:
    assert (
        shown_url("https://drain:pw@orders.example:8443/api")
        == "https://***@orders.example:8443/api"
    )
    assert shown_url("http://127.0.0.1:8090/orders") == "http://127.0.0.1:8090/orders"
