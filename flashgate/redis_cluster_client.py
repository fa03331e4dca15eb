"""redis-py's asyncio cluster client, minus one habit that turns a failover into 500s.

On CLUSTERDOWN, an uncovered slot, or a pipeline retry, redis-py's `RedisCluster`
calls its own `aclose()`, which disconnects every connection of every node,
including connections other tasks are using at that moment. Those calls then fail
inside the transport (AttributeError, uvloop's RuntimeError) instead of with a
Redis error, and the gateway would answer them 500. Here such an internal close
only marks the client to rediscover the cluster's slots on its next call (what
redis-py does after a connection error); a close from outside still closes.
"""

from __future__ import annotations

import contextvars
from typing import Any

from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster

# Set while a command or pipeline of this client runs: an aclose() then comes
# from redis-py's own error handling, not from the owner shutting down.
_running_command: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "flashgate_cluster_command", default=False
)


class FailoverSafeCluster(RedisCluster):
    """`RedisCluster` whose error handling never disconnects calls in flight."""

    async def _execute_command(self, target_node: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        token = _running_command.set(True)
        try:
            return await super()._execute_command(target_node, *args, **kwargs)
        finally:
            _running_command.reset(token)

    async def aclose(self) -> None:
        if _running_command.get():
            self._initialize = True
            return
        await super().aclose()

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # redis-py's own refusal
        return _FailoverSafePipeline(self, transaction)  # type: ignore[abstract]


class _FailoverSafePipeline(ClusterPipeline):
    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        token = _running_command.set(True)
        try:
            return await super().execute(raise_on_error, allow_redirections)
        finally:
            _running_command.reset(token)
