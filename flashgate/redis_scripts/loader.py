"""Load each Lua script of this package once and call it by SHA (EVALSHA).

The SHA1 of a script is computed locally, so a call never waits for a
`SCRIPT LOAD` first. When Redis answers NOSCRIPT (it restarted, or its script
cache was flushed) the script is loaded and that one call is repeated: a
NOSCRIPT reply means the script did not run, so repeating it is safe.

Single calls go through redis-py. Pipelines can go through a dedicated lean
connection (`wire()`, see wire.py) for the gateway's batched hot path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from flashgate.redis_scripts.wire import RespConnection, pack_command

Arg = str | bytes | int | float


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

    def __init__(self, redis: Redis, names: Iterable[str]) -> None:
        self.redis = redis
        self._scripts = {name: read_script(name) for name in names}

    def __getitem__(self, name: str) -> LuaScript:
        return self._scripts[name]

    async def load_all(self) -> None:
        """SCRIPT LOAD every script (optional: calls load on demand anyway)."""
        for script in self._scripts.values():
            await self.redis.script_load(script.source)

    async def call(self, name: str, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        script = self._scripts[name]
        try:
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(script.source)
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)

    def pipeline(self, wire: RespConnection | None = None) -> ScriptPipeline:
        """A pipeline over redis-py, or over `wire` when given."""
        return ScriptPipeline(self, wire)

    def wire(self) -> RespConnection:
        """A dedicated lean connection to the same server, for one batching caller."""
        return RespConnection.like(self.redis.connection_pool.connection_kwargs)


class ScriptPipeline:
    """Several script calls (and plain commands) sent in one round trip.

    Not a transaction: each call is atomic on its own. A call that failed
    with NOSCRIPT is repeated on its own after loading its script.
    """

    def __init__(self, scripts: RedisScripts, wire: RespConnection | None = None) -> None:
        self._scripts = scripts
        self._wire = wire
        self._pipe: Pipeline | None = None if wire else scripts.redis.pipeline(transaction=False)
        self._packed: list[bytes] = []
        self._calls: list[tuple[str, Sequence[Arg], Sequence[Arg]] | None] = []

    def __len__(self) -> int:
        return len(self._calls)

    def script(self, name: str, keys: Sequence[Arg], args: Sequence[Arg]) -> None:
        script = self._scripts[name]
        if self._pipe is None:
            self._packed.append(pack_command(["EVALSHA", script.sha, len(keys), *keys, *args]))
        else:
            self._pipe.evalsha(script.sha, len(keys), *keys, *args)
        self._calls.append((name, keys, args))

    def command(self, *args: Arg) -> None:
        if self._pipe is None:
            self._packed.append(pack_command(args))
        else:
            self._pipe.execute_command(*args)
        self._calls.append(None)

    async def execute(self) -> list[Any]:
        """Results in call order; an error of one call is returned in its place."""
        if not self._calls:
            return []
        results: list[Any]
        if self._wire is not None:
            results = await self._wire.execute(self._packed)
        else:
            assert self._pipe is not None
            # execute() resets the pipeline itself, even when it fails.
            results = await self._pipe.execute(raise_on_error=False)
        for index, result in enumerate(results):
            call = self._calls[index]
            if isinstance(result, NoScriptError) and call is not None:
                try:
                    results[index] = await self._scripts.call(*call)
                except Exception as exc:  # returned in place, like the pipeline does
                    results[index] = exc
        return results
