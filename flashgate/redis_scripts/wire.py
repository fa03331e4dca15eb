"""A lean RESP2 connection for the hot path: send a pipeline of script calls, read the replies.

redis-py spends ~25-45 us of Python per pipelined command and ~100 us per call
(command objects, pool, retries, observability hooks, one awaited read per
reply); Redis itself needs ~13 us per script call (see docs/FACTS.md). Here a batch
is packed into one buffer, written at once, and its replies parsed from the
read buffer synchronously. Only what the batched admission path needs: TCP,
AUTH, SELECT, bulk-string arguments, RESP2 replies. Error replies come back as
redis-py's exception objects (NoScriptError for NOSCRIPT), so callers handle
them like redis-py's own.

One connection serves one caller at a time (a lock); any I/O failure closes it
and raises redis-py's ConnectionError / TimeoutError, and the next call
reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int | float

_READ_CHUNK = 65536
_MORE = object()  # the buffer ends inside a reply


def _encode(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool):
        raise TypeError("booleans are ambiguous in Redis arguments")
    if isinstance(arg, int):
        return b"%d" % arg
    return repr(arg).encode()


def pack_command(args: Sequence[Arg]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    # Strings first: they are nearly every argument of the hot path.
    encoded = [arg.encode() if type(arg) is str else _encode(arg) for arg in args]
    parts = [b"*%d\r\n" % len(encoded)]
    parts += [b"$%d\r\n%s\r\n" % (len(data), data) for data in encoded]
    return b"".join(parts)


class _Incomplete(Exception):
    """The buffer ends inside a reply: read more."""


def _error(message: str) -> ResponseError:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


def _parse(buffer: bytearray, position: int) -> tuple[Any, int]:
    """One reply starting at `position`; returns it and the position after it."""
    end = buffer.find(b"\r\n", position)
    if end < 0:
        raise _Incomplete
    kind = buffer[position]
    line = bytes(buffer[position + 1 : end])
    after = end + 2
    if kind == 0x2B:  # +simple
        return line.decode(), after
    if kind == 0x2D:  # -error
        return _error(line.decode(errors="replace")), after
    if kind == 0x3A:  # :integer
        return int(line), after
    if kind == 0x24:  # $bulk
        length = int(line)
        if length < 0:
            return None, after
        if len(buffer) < after + length + 2:
            raise _Incomplete
        return bytes(buffer[after : after + length]), after + length + 2
    if kind == 0x2A:  # *array
        count = int(line)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            item, after = _parse(buffer, after)
            items.append(item)
        return items, after
    raise ResponseError(f"unexpected reply type {chr(kind)!r}")


class RespConnection:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self._address = (host, port)
        self._setup: list[bytes] = []
        if password:
            auth: list[Arg] = ["AUTH", username, password] if username else ["AUTH", password]
            self._setup.append(pack_command(auth))
        if db:
            self._setup.append(pack_command(["SELECT", db]))
        self._timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = bytearray()
        self._lock = asyncio.Lock()

    @classmethod
    def like(cls, connection_kwargs: Mapping[str, Any]) -> RespConnection:
        """A connection to the server a redis-py pool (its `connection_kwargs`) talks to."""
        return cls(
            host=connection_kwargs.get("host", "localhost"),
            port=int(connection_kwargs.get("port", 6379)),
            db=int(connection_kwargs.get("db", 0) or 0),
            username=connection_kwargs.get("username"),
            password=connection_kwargs.get("password"),
            timeout_s=connection_kwargs.get("socket_timeout") or 2.0,
        )

    async def execute(self, commands: Sequence[bytes]) -> list[Any]:
        """Send packed commands in one write; their replies, errors as exception objects."""
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await self._round_trip(commands)
            except (OSError, EOFError) as exc:
                await self.close()
                raise RedisConnectionError(f"Redis connection failed: {exc}") from exc
            except TimeoutError as exc:
                await self.close()
                raise RedisTimeoutError("Redis did not answer in time") from exc
            except BaseException:
                # Cancelled mid-reply: the stream position is unknown, start afresh.
                await self.close()
                raise

    async def _round_trip(self, commands: Sequence[bytes]) -> list[Any]:
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(b"".join(commands))
        await self._writer.drain()
        return await self._read(self._reader, len(commands))

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(*self._address)
        self._buffer.clear()
        if self._setup:
            self._writer.write(b"".join(self._setup))
            await self._writer.drain()
            for reply in await self._read(self._reader, len(self._setup)):
                if isinstance(reply, ResponseError):
                    raise RedisConnectionError(f"Redis refused the connection set-up: {reply}")

    async def _read(self, reader: asyncio.StreamReader, count: int) -> list[Any]:
        replies: list[Any] = []
        buffer = self._buffer
        position = 0
        while len(replies) < count:
            try:
                reply, position_after = _parse(buffer, position)
            except (_Incomplete, IndexError):
                reply = _MORE
            if reply is _MORE:
                chunk = await reader.read(_READ_CHUNK)
                if not chunk:
                    raise EOFError("Redis closed the connection")
                buffer += chunk
                continue
            replies.append(reply)
            position = position_after
        del buffer[:position]
        return replies

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        self._buffer.clear()
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
