"""Load each Lua script of this package once and call it by SHA (EVALSHA).

The SHA1 of a script is computed locally, so a call never waits for a
`SCRIPT LOAD` first. When Redis answers NOSCRIPT (it restarted, or its script
cache was flushed) the script is loaded and that one call is repeated: a
NOSCRIPT reply means the script did not run, so repeating it is safe.

Single calls go through redis-py, whichever client the settings made: on Redis
Cluster each call goes to the primary of its first key's slot (every script
keeps its keys under one hash tag) and `SCRIPT LOAD` goes to every primary, so a
replica promoted by a failover (which has an empty script cache) is taught the
script on its first NOSCRIPT. Pipelines are split per node by redis-py's cluster
pipeline. Replies are parsed by hiredis (redis-py's C parser) when installed, as
it is here: a hand-written RESP connection for the hot path was measured against
it and dropped (loadtest/RESULTS.md, "The lean wire").

A pipeline built with `wait` is answered only once that many replicas hold its
script calls: a `WAIT` is sent right after them on the same connection (one per
node), since `WAIT` cannot run inside a script. A call whose `WAIT` fell short
comes back as `NotReplicated`, carrying what the script answered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import NoScriptError, RedisError

from flashgate.redis_client import RedisClient, RedisFailure, forget_topology

Arg = str | bytes | int | float


@dataclass(frozen=True, slots=True)
class Replication:
    """How many replicas must hold a pipeline's script calls, and how long to wait."""

    replicas: int
    timeout_ms: int


class NotReplicated(RedisError):
    """The script ran on the primary, but fewer replicas than asked confirmed it in time
    (or its slot moved meanwhile): a failover could still lose what it did."""

    def __init__(self, result: Any, replicas: int) -> None:
        super().__init__(f"only {replicas} replica(s) confirmed the write in time")
        self.result = result
        self.replicas = replicas


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    source: str
    sha: str


def read_script(name: str) -> LuaScript:
    """Read `<name>.lua` from this package."""
    source = resources.files(__package__).joinpath(f"{name}.lua").read_text()
    return LuaScript(name, source, hashlib.sha1(source.encode()).hexdigest())


class RedisScripts:
    """A set of named scripts bound to one Redis client."""

    def __init__(self, redis: RedisClient, names: Iterable[str]) -> None:
        self.redis = redis
        self._scripts = {name: read_script(name) for name in names}

    def __getitem__(self, name: str) -> LuaScript:
        return self._scripts[name]

    async def call(self, name: str, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        script = self._scripts[name]
        try:
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(script.source)
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
        except RedisFailure as exc:
            forget_topology(self.redis, exc)
            raise

    def pipeline(self, *, wait: Replication | None = None) -> ScriptPipeline:
        """A pipeline of script calls; `wait`: see the module."""
        return ScriptPipeline(self, wait=wait)


class ScriptPipeline:
    """Several script calls (and plain commands) sent in one round trip.

    Not a transaction: each call is atomic on its own. A call that failed
    with NOSCRIPT is repeated after loading its script (with its own `WAIT` when
    the pipeline waits for replicas).
    """

    def __init__(
        self,
        scripts: RedisScripts,
        *,
        wait: Replication | None = None,
    ) -> None:
        self._scripts = scripts
        self._wait = wait if wait is not None and wait.replicas > 0 else None
        self._pipe: Pipeline | ClusterPipeline = scripts.redis.pipeline(transaction=False)
        self._calls: list[tuple[str, Sequence[Arg], Sequence[Arg]] | None] = []

    def __len__(self) -> int:
        return len(self._calls)

    def script(self, name: str, keys: Sequence[Arg], args: Sequence[Arg]) -> None:
        script = self._scripts[name]
        self._queue(["EVALSHA", script.sha, len(keys), *keys, *args])
        self._calls.append((name, keys, args))

    def command(self, *args: Arg) -> None:
        self._queue(args)
        self._calls.append(None)

    def _queue(self, args: Sequence[Arg], node: ClusterNode | None = None) -> None:
        if node is not None:
            self._pipe.execute_command(*args, target_nodes=node)
        else:
            self._pipe.execute_command(*args)

    async def execute(self) -> list[Any]:
        """Results in call order; an error of one call is returned in its place."""
        if not self._calls:
            return []
        # Each WAIT goes last on its node's connection, so it covers every call before it.
        waits = await self._queue_waits()
        results: list[Any]
        try:
            # execute() resets the pipeline itself, even when it fails.
            results = await self._pipe.execute(raise_on_error=False)
        except RedisFailure as exc:
            forget_topology(self._scripts.redis, exc)
            raise
        replies, results = results[len(self._calls) :], results[: len(self._calls)]
        for result in results:
            if isinstance(result, RedisError) and not isinstance(result, NoScriptError):
                forget_topology(self._scripts.redis, result)
                break
        if waits is not None:
            self._apply_waits(results, waits, replies)
        await self._repeat_unloaded(results)
        return results

    async def _queue_waits(self) -> list[tuple[ClusterNode | None, list[int]]] | None:
        """Queue the WAITs; for each, the node it went to and the calls it covers."""
        if self._wait is None:
            return None
        wait_args = ("WAIT", self._wait.replicas, self._wait.timeout_ms)
        redis = self._scripts.redis
        if not isinstance(redis, RedisCluster):
            self._queue(wait_args)
            covered = [i for i, call in enumerate(self._calls) if call is not None]
            return [(None, covered)]
        # The slot table is needed now, before the pipeline would load it itself.
        await redis.initialize()
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        for index, call in enumerate(self._calls):
            node = redis.get_node_from_key(_text(call[1][0])) if call and call[1] else None
            # A call with no known node is covered by no WAIT: it reads as not replicated.
            if node is not None:
                by_node.setdefault(node.name, (node, []))[1].append(index)
        for node, _ in by_node.values():
            self._queue(wait_args, node)
        return [(node, covered) for node, covered in by_node.values()]

    def _apply_waits(
        self,
        results: list[Any],
        waits: list[tuple[ClusterNode | None, list[int]]],
        replies: list[Any],
    ) -> None:
        assert self._wait is not None
        redis = self._scripts.redis
        confirmed: dict[int, int] = {}
        for (node, covered), reply in zip(waits, replies, strict=True):
            for index in covered:
                call = self._calls[index]
                # A call redirected (MOVED/ASK) ran on another connection: this WAIT
                # says nothing about it.
                if node is not None and isinstance(redis, RedisCluster) and call is not None:
                    now = redis.get_node_from_key(_text(call[1][0]))
                    if now is None or now.name != node.name:
                        continue
                confirmed[index] = reply if isinstance(reply, int) else 0
        for index, call in enumerate(self._calls):
            if call is None or isinstance(results[index], BaseException):
                continue
            replicas = confirmed.get(index, 0)
            if replicas < self._wait.replicas:
                results[index] = NotReplicated(results[index], replicas)

    async def _repeat_unloaded(self, results: list[Any]) -> None:
        unloaded = [
            index
            for index, result in enumerate(results)
            if isinstance(result, NoScriptError) and self._calls[index] is not None
        ]
        if not unloaded:
            return
        if self._wait is None:
            for index in unloaded:
                call = self._calls[index]
                assert call is not None
                try:
                    results[index] = await self._scripts.call(*call)
                except Exception as exc:  # returned in place, like the pipeline does
                    results[index] = exc
            return
        # With WAIT, the repeated calls need their own WAIT on their own connection.
        names = {call[0] for index in unloaded if (call := self._calls[index]) is not None}
        retry = ScriptPipeline(self._scripts, wait=self._wait)
        try:
            for name in names:
                await self._scripts.redis.script_load(self._scripts[name].source)
            for index in unloaded:
                call = self._calls[index]
                assert call is not None
                retry.script(*call)
            repeated = await retry.execute()
        except RedisFailure as exc:
            repeated = [exc] * len(unloaded)
        for index, result in zip(unloaded, repeated, strict=True):
            results[index] = result


def _text(value: Arg) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
