"""`FLASHGATE_STACK_KAFKA_SECURITY=sasl_ssl flashgate up`: the local stack on a SASL_SSL
broker, as a user runs it (free ports): an order goes through, the printed CA and
credentials let a user's own client in, and a plaintext client without credentials is
refused."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from flashgate.settings import load_settings
from tests.services import http_json, wait_until
from tests.test_local_stack import _post, _request, _stack_env


# Above its own bounds (up 150 s, stored 30 s, the stop 60 s, the kill 30 s).
@pytest.mark.timeout(150 + 30 + 60 + 30 + 60)
def test_up_with_sasl_ssl_serves_orders_and_refuses_plaintext(
    tmp_path: Path, kafka_libs: Path
) -> None:
    env = {**_stack_env(tmp_path), "FLASHGATE_STACK_KAFKA_SECURITY": "sasl_ssl"}
    settings = load_settings(environ=env)
    log_path = tmp_path / "up.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    up = subprocess.Popen(
        [sys.executable, "-m", "flashgate", "up"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert wait_until(lambda: b"flashgate is up" in log_path.read_bytes(), 150), (
            log_path.read_text()
        )
        printed = log_path.read_text()
        found = re.search(r"password in (\S+), CA (\S+)", printed)
        assert found, printed
        password_file, ca = Path(found[1].rstrip(",")), Path(found[2])
        assert password_file.read_text().strip() not in printed

        gateway = f"http://{settings.gateway.host}:{settings.gateway.port}"
        token = (tmp_path / "state" / "admin-token").read_text().strip()
        admin = f"http://{settings.admin.host}:{settings.admin.port}"
        _request("PUT", f"{admin}/admin/v1/sales/sale-1", {"stock": {"SKU-1": 10}}, token)
        order = {"sale_id": "sale-1", "sku": "SKU-1", "quantity": 1, "user_id": "u-1"}
        answer = _post(f"{gateway}/v1/orders", order)
        assert answer["status"] == "accepted"
        backend = settings.drain.backend_url
        assert wait_until(lambda: http_json("GET", f"{backend}/stats")["orders"] == 1, 30)

        bootstrap = settings.kafka.bootstrap_servers
        user = AdminClient(
            {
                "bootstrap.servers": bootstrap,
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "flashgate",
                "sasl.password": password_file.read_text().strip(),
                "ssl.ca.location": str(ca),
            }
        )
        assert settings.kafka.orders_topic in user.list_topics(timeout=10).topics
        plaintext = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        with pytest.raises(KafkaException):
            plaintext.list_topics(timeout=3)

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(timeout=30)
        log.close()
