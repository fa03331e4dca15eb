"""Bearer-token checks: storefront tokens on the public API, the admin token on the admin API.

Tokens are compared with `hmac.compare_digest` against every configured token,
so the time taken says nothing about how much of a guess was right. Tokens
are never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from flashgate.admission.keys import idempotency_scope
from gateway.problems import ApiError

# The scope key under which the caller's identity (for idempotency) is kept.
CALLER_SCOPE_KEY = "flashgate.caller"


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return str(token.strip())
            return None
    return None


def matching_token(given: str | None, tokens: Sequence[bytes]) -> bytes | None:
    """The configured token equal to `given`, compared in constant time; None if none."""
    if given is None:
        return None
    candidate = given.encode("utf-8", "surrogateescape")
    found = None
    for token in tokens:
        if hmac.compare_digest(candidate, token):  # no early exit: every token is compared
            found = token
    return found


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


class BearerAuth:
    """Require one of `tokens` on paths under `prefix`; no tokens means open (public API only)."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: Sequence[str],
        *,
        prefix: str,
        required: bool = False,
        exempt: Sequence[str] = (),
    ) -> None:
        self.app = app
        # Static assets with no data in them (the ops page asks for the token itself).
        self.exempt = tuple(exempt)
        self.tokens = [token.encode() for token in tokens if token]
        self.prefix = prefix
        if required and not self.tokens:
            raise ValueError("a token is required but none is configured")
        self._scopes = {token: idempotency_scope(token.decode()) for token in self.tokens}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not path.startswith(self.prefix)
            or (self.exempt and path.startswith(self.exempt) and scope["method"] == "GET")
        ):
            await self.app(scope, receive, send)
            return
        if not self.tokens:
            scope[CALLER_SCOPE_KEY] = "anon"
            await self.app(scope, receive, send)
            return
        token = matching_token(bearer_token(scope), self.tokens)
        if token is None:
            await unauthorized("a valid bearer token is required").to_response()(
                scope, receive, send
            )
            return
        scope[CALLER_SCOPE_KEY] = self._scopes[token]
        await self.app(scope, receive, send)
