"""Shopper tokens: a storefront vouches for one shopper, one sale, until a time.

For storefronts that let browsers call flashgate directly, a storefront bearer
token cannot be handed to the browser. The storefront instead signs a JWT
(HS256) with a shared secret: `sub` is the shopper's `user_id`, `sale` the sale
id, `exp` when it stops counting. The gateway verifies it with no lookup at all,
and an order's `user_id` and `sale_id` must be the token's, so a bot that mints
user ids gets 401s instead of a fresh per-user limit each time.

Rotation: several secrets may be active at once (`[gateway]
shopper_token_secrets`, the newest first); a token is accepted when any of them
signed it. Add the new secret, let storefronts sign with it, and remove the old
one once its last token has expired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jwt

from flashgate.errors import FlashgateError
from flashgate.secret import Secret

ALGORITHM = "HS256"
# Storefront and gateway clocks differ by a little; a token is not refused for that.
LEEWAY_S = 5.0
# RFC 7518 (3.2): an HS256 key at least as long as the hash; shorter ones are guessable.
MIN_SECRET_BYTES = 32
REQUIRED_CLAIMS = ("exp", "sub", "sale")


class InvalidShopperToken(FlashgateError):
    """The token is not one a configured secret signed, has expired, or lacks a claim."""


@dataclass(frozen=True, slots=True)
class Shopper:
    """What a valid token vouches for."""

    user_id: str
    sale_id: str


class ShopperTokens:
    """Verify shopper tokens against every active secret."""

    def __init__(self, secrets: Sequence[Secret], leeway_s: float = LEEWAY_S) -> None:
        self._keys = [secret.reveal().encode() for secret in secrets if secret]
        if not self._keys:
            raise ValueError("shopper tokens need at least one secret")
        if any(len(key) < MIN_SECRET_BYTES for key in self._keys):
            raise ValueError(f"a shopper token secret must be {MIN_SECRET_BYTES} bytes or more")
        self._leeway_s = leeway_s

    def verify(self, token: str) -> Shopper:
        """The shopper a token vouches for; `InvalidShopperToken` says why not."""
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    options={"require": list(REQUIRED_CLAIMS)},
                    leeway=self._leeway_s,
                )
            except jwt.InvalidSignatureError:
                continue  # signed with another of the active secrets, perhaps
            except jwt.ExpiredSignatureError:
                raise InvalidShopperToken("the shopper token has expired") from None
            except jwt.MissingRequiredClaimError as exc:
                raise InvalidShopperToken(f"the shopper token lacks {exc.claim!r}") from None
            except jwt.InvalidTokenError:
                raise InvalidShopperToken("the shopper token is not a valid token") from None
            user_id, sale_id = claims["sub"], claims["sale"]
            if not isinstance(user_id, str) or not isinstance(sale_id, str):
                raise InvalidShopperToken("the shopper token's sub and sale must be strings")
            return Shopper(user_id, sale_id)
        raise InvalidShopperToken("the shopper token is not signed by an active secret")
