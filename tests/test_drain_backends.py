"""The drain against backends that behave like real order services, end to end.

Real consumer, real Kafka, real Redis, and the reference backend in each of its
modes: a bearer token, OAuth2 client credentials with short-lived tokens, TLS
(and mutual TLS) with a test CA, refusing every order for a while, a storm of
one per-order status, 422 for a marked subset. What the backend stored is read
from its `/stats`; the drain's alarm from the progress in Redis, the admin API
and the gateway's `/metrics`. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flashgate.dlq import list_dead_letters
from flashgate.drain import progress
from flashgate.stack.redis_tls import ensure_tls_files
from tests.services import ServiceEnv, Services, admin_json, http_json, wait_until
from tests.test_drain_e2e import (
    FILE_KEYS,
    log_text,
    order_status,
    produce_orders,
    read_progress,
    stats,
    write_config,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def drain_env(service_env: ServiceEnv) -> Iterator[ServiceEnv]:
    """The test's environment, its drain rates left to the settings file it writes."""
    for key in FILE_KEYS:
        service_env.variables.pop(key, None)
    yield service_env


def refusal(env: ServiceEnv) -> progress.BackendRefusal | None:
    state = read_progress(env)
    return state.backend_refusal if state is not None else None


def wait_refusal(env: ServiceEnv, status: int, timeout_s: float = 20) -> progress.BackendRefusal:
    assert wait_until(lambda: (r := refusal(env)) is not None and r.status == status, timeout_s), (
        refusal(env)
    )
    found = refusal(env)
    assert found is not None
    return found


def wait_all_stored(env: ServiceEnv, count: int, timeout_s: float, **kw: Any) -> dict[str, Any]:
    assert wait_until(lambda: stats_of(env, **kw)["orders"] >= count, timeout_s), stats_of(
        env, **kw
    )
    return stats_of(env, **kw)


def stats_of(
    env: ServiceEnv, url: str = "", context: ssl.SSLContext | None = None
) -> dict[str, Any]:
    """The backend's /stats (over https with `context` when `url` is given)."""
    if not url:
        return stats(env)
    with urllib.request.urlopen(f"{url}/stats", timeout=10, context=context) as response:
        found: dict[str, Any] = json.loads(response.read())
    return found


# -- credentials ---------------------------------------------------------------------------


def test_bearer_token_file_wrong_then_rotated_holds_then_delivers_everything(
    drain_env: ServiceEnv,
    services: Services,
    tmp_path: Path,
) -> None:
    total = 200
    token_file = tmp_path / "backend-token"
    token_file.write_text("old-token\n")
    write_config(drain_env, rate_per_s=200, burst=20, backend_auth="bearer",
                 backend_token_file=str(token_file))  # fmt: skip
    services.start_backend("--require-token", "new-token")
    order_ids = produce_orders(drain_env.settings, total)
    consumer = services.start_consumer()

    # A token the backend does not take: the drain holds, says why, dead-letters nothing.
    found = wait_refusal(drain_env, 401)
    assert "bearer token" in found.message or "unknown token" in found.message
    assert stats(drain_env)["orders"] == 0

    token_file.write_text("new-token\n")  # the mounted secret is rotated
    final = wait_all_stored(drain_env, total, timeout_s=40)
    assert final["orders"] == total and final["duplicates"] == 0
    assert list_dead_letters(drain_env.settings) == []
    assert wait_until(lambda: refusal(drain_env) is None, 10)
    assert order_status(drain_env, order_ids[-1]).get("status") == "delivered"
    log = log_text(consumer)
    assert "backend refuses every order (401" in log and "backend is back" in log
    assert "new-token" not in log and "old-token" not in log


def test_oauth2_tokens_expiring_mid_drain_are_refreshed_and_nothing_dead_lettered(
    drain_env: ServiceEnv,
    services: Services,
) -> None:
    total = 500
    token_url = f"{drain_env.backend_url}/oauth/token"
    drain_env.variables["FLASHGATE_DRAIN_BACKEND_OAUTH2_CLIENT_SECRET"] = "s3cr:et"
    write_config(
        drain_env, rate_per_s=100, burst=10, backend_auth="oauth2",
        backend_oauth2_token_url=token_url, backend_oauth2_client_id="drain",
        backend_oauth2_scope="orders:write",
    )  # fmt: skip
    # Tokens live 1.5 s and the drain takes 5 s: it has to renew several times.
    services.start_backend("--oauth2-client", "drain:s3cr:et", "--token-ttl", "1.5")
    produce_orders(drain_env.settings, total)
    consumer = services.start_consumer()

    final = wait_all_stored(drain_env, total, timeout_s=60)
    assert final["orders"] == total and final["duplicates"] == 0
    assert final["tokens_issued"] >= 3, final
    assert list_dead_letters(drain_env.settings) == []
    log = log_text(consumer)
    assert "backend refuses" not in log and "s3cr:et" not in log


def test_oauth2_wrong_client_secret_holds_the_drain_with_the_token_endpoints_answer(
    drain_env: ServiceEnv,
    services: Services,
) -> None:
    drain_env.variables["FLASHGATE_DRAIN_BACKEND_OAUTH2_CLIENT_SECRET"] = "wrong"
    write_config(
        drain_env, rate_per_s=100, burst=10, backend_auth="oauth2",
        backend_oauth2_token_url=f"{drain_env.backend_url}/oauth/token",
        backend_oauth2_client_id="drain",
    )  # fmt: skip
    services.start_backend("--oauth2-client", "drain:right")
    produce_orders(drain_env.settings, 20)
    services.start_consumer()
    found = wait_refusal(drain_env, 401)
    assert "token endpoint" in found.message and "invalid_client" in found.message
    assert stats(drain_env)["orders"] == 0
    assert list_dead_letters(drain_env.settings) == []


# -- TLS -----------------------------------------------------------------------------------


def test_tls_with_the_test_ca_delivers_and_a_wrong_ca_fails_clearly(
    drain_env: ServiceEnv,
    services: Services,
    tmp_path: Path,
) -> None:
    total = 100
    tls = ensure_tls_files(tmp_path / "tls")
    other = ensure_tls_files(tmp_path / "other-ca")
    port = drain_env.variables["FLASHGATE_BACKEND_PORT"]
    https = f"https://127.0.0.1:{port}"
    services.start_backend(
        "--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key),
        "--tls-client-ca", str(tls.ca),
    )  # fmt: skip
    write_config(drain_env, rate_per_s=200, burst=20)
    produce_orders(drain_env.settings, total)
    client = {
        "FLASHGATE_DRAIN_BACKEND_URL": f"{https}/orders",
        "FLASHGATE_DRAIN_BACKEND_CLIENT_CERT": str(tls.client_cert),
        "FLASHGATE_DRAIN_BACKEND_CLIENT_KEY": str(tls.client_key),
    }
    wrong = services.start_consumer(FLASHGATE_DRAIN_BACKEND_CA_FILE=str(other.ca), **client)
    found = wait_refusal(drain_env, 0)
    assert "certificate verify failed" in found.message, found
    assert list_dead_letters(drain_env.settings) == []
    wrong.stop(timeout_s=30)
    assert "backend refuses every order (0 TLS:" in log_text(wrong)

    services.start_consumer(FLASHGATE_DRAIN_BACKEND_CA_FILE=str(tls.ca), **client)
    context = ssl.create_default_context(cafile=str(tls.ca))
    context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    final = wait_all_stored(drain_env, total, timeout_s=40, url=https, context=context)
    assert final["orders"] == total and final["duplicates"] == 0
    assert list_dead_letters(drain_env.settings) == []


# -- refusals ------------------------------------------------------------------------------


def test_401_to_everything_for_20_s_pauses_the_drain_and_loses_nothing_to_the_dlq(
    drain_env: ServiceEnv,
    services: Services,
) -> None:
    total = 200
    write_config(drain_env, rate_per_s=200, burst=20)
    services.start_backend("--refuse-status", "401", "--refuse-seconds", "20")
    refusing_until = time.monotonic() + 20
    services.start_gateway()
    order_ids = produce_orders(drain_env.settings, total)
    consumer = services.start_consumer()

    found = wait_refusal(drain_env, 401)
    assert "refused" in found.message
    # The alarm where ops look: the admin API (and so `flashgate status` and the ops
    # page, which read it) and the gateway's /metrics.
    drain = admin_json(drain_env, "GET", "/admin/v1/drain")
    assert drain["backend_refusal"]["status"] == 401, drain
    with urllib.request.urlopen(f"{drain_env.gateway_url}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'flashgate_drain_backend_refusing{group="' in metrics and 'status="401"' in metrics
    # It holds: nothing dead-lettered while the backend refuses, however long.
    while time.monotonic() < refusing_until - 2:
        assert list_dead_letters(drain_env.settings) == []
        assert stats(drain_env)["orders"] == 0
        time.sleep(1)

    final = wait_all_stored(drain_env, total, timeout_s=40)
    assert final["orders"] == total and final["duplicates"] == 0
    assert list_dead_letters(drain_env.settings) == []
    for order_id in order_ids[::20]:
        assert order_status(drain_env, order_id).get("status") == "delivered"
    assert wait_until(lambda: refusal(drain_env) is None, 10)
    assert admin_json(drain_env, "GET", "/admin/v1/drain")["backend_refusal"] is None
    log = log_text(consumer)
    assert "pausing partitions (backend refuses every order)" in log
    assert "backend is back" in log and "dead-lettered order" not in log


@pytest.mark.parametrize("status", [403, 404])
def test_403_or_404_to_everything_holds_the_drain_too(
    drain_env: ServiceEnv,
    services: Services,
    status: int,
) -> None:
    total = 60
    write_config(drain_env, rate_per_s=200, burst=20)
    services.start_backend()
    http_json("PUT", f"{drain_env.backend_url}/admin/faults",
              {"refuse_status": status, "refuse_seconds": 4})  # fmt: skip
    produce_orders(drain_env.settings, total)
    services.start_consumer()
    wait_refusal(drain_env, status)
    final = wait_all_stored(drain_env, total, timeout_s=40)
    assert final["orders"] == total
    assert list_dead_letters(drain_env.settings) == []


def test_a_storm_of_one_status_trips_the_breaker_and_its_letters_are_replayed(
    drain_env: ServiceEnv,
    services: Services,
) -> None:
    total, storm = 150, 5
    write_config(drain_env, rate_per_s=100, burst=5, refusal_storm_orders=storm)
    services.start_backend()
    # A deploy broke the backend's schema: 400 to every order for 6 s (an unforeseen
    # status, per-order by its code: only the breaker can tell it is a storm).
    http_json("PUT", f"{drain_env.backend_url}/admin/faults",
              {"refuse_status": 400, "refuse_seconds": 6})  # fmt: skip
    produce_orders(drain_env.settings, total)
    consumer = services.start_consumer()

    found = wait_refusal(drain_env, 400)
    assert "storm" in found.message
    letters = list_dead_letters(drain_env.settings)
    # The orders refused before the breaker saw the storm (one per slot in flight at most).
    assert storm - 1 <= len(letters) <= storm - 1 + drain_env.settings.drain.concurrency

    # Once the backend takes orders, every order reaches it: the storm's dead letters
    # were produced to the orders topic again by the drain itself.
    final = wait_all_stored(drain_env, total, timeout_s=60)
    assert final["orders"] == total
    for letter in letters:
        assert wait_until(
            lambda o=letter.order_id: order_status(drain_env, o).get("status") == "delivered", 10
        )
    assert f"replayed {len(letters)} orders dead-lettered in the refusal storm" in log_text(
        consumer
    )


def test_422_for_a_marked_subset_dead_letters_exactly_those(
    drain_env: ServiceEnv,
    services: Services,
) -> None:
    total = 100
    write_config(drain_env, rate_per_s=200, burst=20)
    services.start_backend("--reject-attribute", "bad")
    order_ids = produce_orders(drain_env.settings, total, mark="bad", every=10)
    marked = set(order_ids[::10])
    services.start_consumer()

    final = wait_all_stored(drain_env, total - len(marked), timeout_s=40)
    assert wait_until(lambda: len(list_dead_letters(drain_env.settings)) >= len(marked), 20)
    letters = list_dead_letters(drain_env.settings)
    assert {letter.order_id for letter in letters} == marked and len(letters) == len(marked)
    assert all(letter.reason.startswith("backend answered 422") for letter in letters)
    assert final["orders"] == total - len(marked)
    assert refusal(drain_env) is None
