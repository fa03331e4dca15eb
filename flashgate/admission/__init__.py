"""Admission of orders in Redis: sales and stock, GCRA rate limits, reservations, idempotency.

Strategies (what to decide) live in the Lua scripts of `flashgate.redis_scripts`,
one per atomic operation; this package names the keys, encodes the calls and
turns the replies into typed verdicts. The gateway, its admin listener and the
tests share it, so they agree on every key.
"""
