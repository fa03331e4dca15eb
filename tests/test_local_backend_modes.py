"""`flashgate up`'s backend modes: the backend's flags and the drain's settings agree.

Each mode is built into a temporary state directory; its flags must parse as the
reference backend's command line, and the FLASHGATE_DRAIN_* it hands the
consumer must load as settings that authenticate the way the backend asks.
"""

from __future__ import annotations

import stat
import typing
from pathlib import Path

import pytest

from flashgate.settings import StackSettings, load_settings
from flashgate.stack.local_backend import backend_mode
from reference_backend.main import parse_config

MODES = typing.get_args(typing.get_type_hints(StackSettings)["backend_mode"])


def test_every_mode_of_the_setting_is_built() -> None:
    assert set(MODES) >= {"plain", "bearer", "oauth2", "tls", "reject"}


@pytest.mark.parametrize("mode", MODES)
def test_backend_flags_and_drain_settings_agree(mode: str, tmp_path: Path) -> None:
    built = backend_mode(mode, tmp_path, "127.0.0.1", 18090)
    config = parse_config(["--port", "18090", *built.args])
    drain = load_settings(environ=built.drain_env).drain
    if mode == "bearer":
        token_file = Path(drain.backend_token_file)
        assert drain.backend_auth == "bearer"
        assert config.require_token == token_file.read_text().strip() != ""
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    elif mode == "oauth2":
        assert drain.backend_auth == "oauth2"
        secret = Path(drain.backend_oauth2_client_secret_file).read_text().strip()
        assert config.oauth2_credentials == (drain.backend_oauth2_client_id, secret)
        assert drain.backend_oauth2_token_url == "http://127.0.0.1:18090/oauth/token"
    elif mode == "tls":
        assert drain.backend_endpoint == "https://127.0.0.1:18090/orders"
        assert config.tls_cert is not None and Path(drain.backend_ca_file).is_file()
    elif mode.startswith("refuse-"):
        assert config.refuse_status == int(mode[-3:]) and config.refuse_seconds > 0
    elif mode == "reject":
        assert config.reject_attribute == "reject"
    else:
        assert built.args == [] and drain.backend_auth == "none"
    # Made once: a second start reuses the same secrets.
    assert backend_mode(mode, tmp_path, "127.0.0.1", 18090) == built
