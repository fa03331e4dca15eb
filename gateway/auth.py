"""Bearer-token checks: storefront tokens on the public API, the admin token on the admin API.

Tokens are compared with `hmac.compare_digest` against every configured token,
so the time taken says nothing about how much of a guess was right. Tokens
are never logged. Where shopper tokens are configured (gateway/shopper_tokens.py),
a bearer token that is no storefront token must be a valid shopper token; the
shopper it vouches for is left in the scope for the order endpoint to match.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from flashgate.admission.keys import idempotency_scope
from gateway.problems import ApiError
from gateway.shopper_tokens import InvalidShopperToken, Shopper, ShopperTokens

# The scope key under which the caller's identity (for idempotency) is kept.
CALLER_SCOPE_KEY = "flashgate.caller"
# The shopper a shopper token vouched for (absent for storefronts and open gateways).
SHOPPER_SCOPE_KEY = "flashgate.shopper"


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


def invalid_shopper_token(message: str) -> ApiError:
    return ApiError(
        401, "invalid_shopper_token", message,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )  # fmt: skip


def scope_shopper(scope: Scope) -> Shopper | None:
    shopper: Shopper | None = scope.get(SHOPPER_SCOPE_KEY)
    return shopper


class BearerAuth:
    """Require one of `tokens` (or, given `shoppers`, a valid shopper token) on paths under
    `prefix`; neither configured means open (public API only)."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: Sequence[str],
        *,
        prefix: str,
        required: bool = False,
        exempt: Sequence[str] = (),
        shoppers: ShopperTokens | None = None,
    ) -> None:
        self.app = app
        self.shoppers = shoppers
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
        if not self.tokens and self.shoppers is None:
            scope[CALLER_SCOPE_KEY] = "anon"
            await self.app(scope, receive, send)
            return
        given = bearer_token(scope)
        token = matching_token(given, self.tokens)
        if token is not None:
            scope[CALLER_SCOPE_KEY] = self._scopes[token]
        elif self.shoppers is not None and given is not None:
            try:
                shopper = self.shoppers.verify(given)
            except InvalidShopperToken as exc:
                await invalid_shopper_token(str(exc)).to_response()(scope, receive, send)
                return
            scope[SHOPPER_SCOPE_KEY] = shopper
            # Idempotency-Keys of a shopper are theirs alone, whichever token they hold.
            scope[CALLER_SCOPE_KEY] = idempotency_scope(f"shopper:{shopper.user_id}")
        else:
            await unauthorized("a valid bearer token is required").to_response()(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)
