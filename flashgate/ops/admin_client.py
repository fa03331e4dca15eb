"""A small client of the gateway's admin API, for the `flashgate` command.

It finds the admin listener and its token the way the gateway does (settings,
FLASHGATE_ADMIN_TOKEN, else `<state_dir>/admin-token`) and turns "nothing
listens there" into one clear sentence instead of a traceback.
"""

from __future__ import annotations

import json
import tomllib
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from flashgate.errors import FlashgateError
from flashgate.settings import Settings

TIMEOUT_S = 5.0


class AdminUnavailable(FlashgateError):
    """The admin API did not answer: the stack is not running (or not on that address)."""


class AdminRefused(FlashgateError):
    """The admin API answered with an error."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        message = body.get("message") or body.get("error") or "error"
        super().__init__(f"admin API answered {status}: {message}")
        self.status = status
        self.body = body


def admin_token(settings: Settings) -> str:
    if settings.admin.token:
        return settings.admin.token
    path = settings.state_dir / "admin-token"
    try:
        return path.read_text().strip()
    except OSError:
        raise AdminUnavailable(
            f"no admin token: set FLASHGATE_ADMIN_TOKEN or start the stack (it writes {path})"
        ) from None


class AdminClient:
    def __init__(self, base_url: str, token: str, timeout_s: float = TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminClient:
        url = f"http://{settings.admin.host}:{settings.admin.port}"
        return cls(url, admin_token(settings))

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read() or b"{}")
            except ValueError:
                payload = {}
            raise AdminRefused(exc.code, payload if isinstance(payload, dict) else {}) from None
        except (urllib.error.URLError, OSError) as exc:
            raise AdminUnavailable(
                f"the stack is not running: no admin API at {self.base_url} ({_reason(exc)}); "
                "start it with `make up`"
            ) from None

    def drain(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/admin/v1/drain")
        return result

    def set_drain(self, change: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("PUT", "/admin/v1/drain", change)
        return result

    def load_sale(self, sale_id: str, sale: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("PUT", f"/admin/v1/sales/{sale_id}", sale)
        return result

    def sale(self, sale_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/admin/v1/sales/{sale_id}")
        return result


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", exc)
    return str(reason)


def read_sale_file(path: Path) -> tuple[str | None, dict[str, Any]]:
    """A sale from TOML: optional `sale_id`, `stock` table, optional limits and `rates`."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FlashgateError(f"cannot read sale file {path}: {exc}") from exc
    sale_id = data.pop("sale_id", None)
    if not isinstance(data.get("stock"), dict) or not data["stock"]:
        raise FlashgateError(f"{path}: a [stock] table of SKU = units is required")
    for field in ("opens_at", "closes_at"):
        # TOML's own date-times (unquoted) travel as RFC 3339, as the admin API takes them.
        if isinstance(data.get(field), datetime):
            data[field] = data[field].isoformat()
    return (str(sale_id) if sale_id is not None else None), data
