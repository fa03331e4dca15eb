"""Dead letters: orders the drain could not deliver, with the reason; `flashgate dlq list|replay`.

A dead letter on `orders.dlq` keeps the original record's key and value and
says why in its headers:

| header                 | value                                              |
| ---------------------- | -------------------------------------------------- |
| `dlq.reason`           | why (the backend's answer, or "undecodable record") |
| `dlq.source.topic`     | where the order was read                           |
| `dlq.source.partition` |                                                    |
| `dlq.source.offset`    |                                                    |
| `dlq.attempts`         | requests sent to the backend for it                |
| `dlq.failed_at`        | unix seconds                                       |
| `dlq.consumer`         | the consumer that gave up                          |
| `dlq.replayed`         | how often it was replayed before (0 the first time) |

`flashgate dlq replay` re-produces every dead letter not replayed yet to the
orders topic (same key and value, header `dlq.replayed` = previous count + 1),
waits for Kafka's acknowledgements, then commits its own consumer group
(`<drain group>.dlq-replay`) on the DLQ so the same letters are not replayed
twice. A crash between the two replays some again: at-least-once, and the
backend is idempotent on `order_id`.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from flashgate.errors import KafkaUnavailable
from flashgate.kafka.config import producer_config, reader_config
from flashgate.settings import Settings

HEADER_PREFIX = "dlq."
HEADER_REASON = "dlq.reason"
HEADER_SOURCE_TOPIC = "dlq.source.topic"
HEADER_SOURCE_PARTITION = "dlq.source.partition"
HEADER_SOURCE_OFFSET = "dlq.source.offset"
HEADER_ATTEMPTS = "dlq.attempts"
HEADER_FAILED_AT = "dlq.failed_at"
HEADER_CONSUMER = "dlq.consumer"
HEADER_REPLAYED = "dlq.replayed"
REASON_MAX_BYTES = 1_000
READ_TIMEOUT_S = 30.0
KAFKA_TIMEOUT_S = 10.0

HeaderValue = str | bytes | None
Headers = list[tuple[str, HeaderValue]]
# What confluent-kafka gives (Message.headers()) and takes.
RawHeaders = Headers | dict[str, HeaderValue] | None


def _bytes(value: bytes | str | None) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else value.encode()


def _pairs(headers: RawHeaders) -> Sequence[tuple[str, HeaderValue]]:
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, dict) else headers


def header(headers: RawHeaders, name: str) -> str | None:
    """The last value of header `name`, as text."""
    found = None
    for key, value in _pairs(headers):
        if key == name:
            found = _bytes(value).decode(errors="replace")
    return found


def replay_count(headers: RawHeaders) -> int:
    try:
        return int(header(headers, HEADER_REPLAYED) or 0)
    except ValueError:
        return 0


def _kept(headers: RawHeaders) -> Headers:
    """The record's own headers, without any dlq.* ones."""
    return [(k, v) for k, v in _pairs(headers) if not k.startswith(HEADER_PREFIX)]


def dead_letter_headers(
    *,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    attempts: int,
    consumer: str,
    source_headers: RawHeaders = None,
    failed_at: float | None = None,
) -> Headers:
    """Headers of a dead letter: the record's own, then why and where it failed."""
    return [
        *_kept(source_headers),
        (HEADER_REASON, reason.encode(errors="replace")[:REASON_MAX_BYTES]),
        (HEADER_SOURCE_TOPIC, topic.encode()),
        (HEADER_SOURCE_PARTITION, str(partition).encode()),
        (HEADER_SOURCE_OFFSET, str(offset).encode()),
        (HEADER_ATTEMPTS, str(attempts).encode()),
        (HEADER_FAILED_AT, repr(time.time() if failed_at is None else failed_at).encode()),
        (HEADER_CONSUMER, consumer.encode()),
        (HEADER_REPLAYED, str(replay_count(source_headers)).encode()),
    ]


def replay_headers(dead_letter_headers: RawHeaders) -> Headers:
    """Headers of a replayed order: its own, and how often it was replayed now."""
    count = replay_count(dead_letter_headers) + 1
    return [*_kept(dead_letter_headers), (HEADER_REPLAYED, str(count).encode())]


def replay_group(settings: Settings) -> str:
    return f"{settings.drain.group_id}.dlq-replay"


class DeadLetter(msgspec.Struct, frozen=True):
    partition: int
    offset: int
    order_id: str | None
    reason: str
    source: str
    attempts: int
    failed_at: float | None
    replayed_before: int
    pending: bool
    """Not replayed yet by `flashgate dlq replay`."""


def _order_id(message: Message) -> str | None:
    try:
        value = msgspec.json.decode(message.value() or b"")
    except msgspec.DecodeError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("order_id"), str):
        return str(value["order_id"])
    key = message.key()
    return key.decode(errors="replace") if key else None


def _describe(message: Message, pending: bool) -> DeadLetter:
    headers = message.headers()
    failed_at = header(headers, HEADER_FAILED_AT)
    source = "{}[{}]@{}".format(
        header(headers, HEADER_SOURCE_TOPIC) or "?",
        header(headers, HEADER_SOURCE_PARTITION) or "?",
        header(headers, HEADER_SOURCE_OFFSET) or "?",
    )
    return DeadLetter(
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        order_id=_order_id(message),
        reason=header(headers, HEADER_REASON) or "",
        source=source,
        attempts=int(header(headers, HEADER_ATTEMPTS) or 0),
        failed_at=float(failed_at) if failed_at else None,
        replayed_before=replay_count(headers),
        pending=pending,
    )


class _DlqReader:
    """Reads the DLQ from the replay group's committed offsets (or the start) to its end."""

    def __init__(self, settings: Settings, *, from_start: bool) -> None:
        self._topic = settings.kafka.dlq_topic
        self._consumer = Consumer(
            reader_config(
                settings.kafka, f"flashgate-dlq-{uuid.uuid4().hex[:8]}", replay_group(settings)
            )
        )
        try:
            metadata = self._consumer.list_topics(self._topic, timeout=KAFKA_TIMEOUT_S)
        except KafkaException as exc:
            self._consumer.close()
            raise KafkaUnavailable(f"cannot read {self._topic}: {exc}") from exc
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None:
            self._consumer.close()
            raise KafkaUnavailable(f"dead-letter topic {self._topic} does not exist")
        partitions = [TopicPartition(self._topic, p) for p in sorted(topic.partitions)]
        self.committed = {
            tp.partition: tp.offset
            for tp in self._consumer.committed(partitions, timeout=KAFKA_TIMEOUT_S)
        }
        self.ends: dict[int, int] = {}
        starts = []
        for tp in partitions:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=KAFKA_TIMEOUT_S)
            self.ends[tp.partition] = high
            committed = self.committed.get(tp.partition, -1)
            start = low if from_start or committed < 0 else max(low, committed)
            if start < high:
                starts.append(TopicPartition(self._topic, tp.partition, start))
        self._open = {tp.partition for tp in starts}
        if starts:
            self._consumer.assign(starts)

    def read(self, limit: int | None) -> list[Message]:
        """Records up to the ends seen at start (or `limit` of them)."""
        messages: list[Message] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while self._open and (limit is None or len(messages) < limit):
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"reading {self._topic} timed out")
            for message in self._consumer.consume(500, 1.0):
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaUnavailable(f"reading {self._topic}: {error}")
                    continue
                partition, offset = message.partition() or 0, message.offset() or 0
                if partition not in self._open:
                    continue
                if offset >= self.ends[partition] - 1:
                    self._open.discard(partition)
                if offset < self.ends[partition] and (limit is None or len(messages) < limit):
                    messages.append(message)
            self._close_finished()
        return messages

    def _close_finished(self) -> None:
        # Positions rather than offsets seen: an offset may be a marker, never delivered.
        if not self._open:
            return
        open_now = [TopicPartition(self._topic, p) for p in sorted(self._open)]
        for tp in self._consumer.position(open_now):
            if tp.offset >= self.ends[tp.partition]:
                self._open.discard(tp.partition)

    def commit(self, messages: list[Message]) -> None:
        highest: dict[int, int] = {}
        for message in messages:
            partition = message.partition() or 0
            highest[partition] = max(highest.get(partition, -1), message.offset() or 0)
        if highest:
            self._consumer.commit(
                offsets=[TopicPartition(self._topic, p, o + 1) for p, o in highest.items()],
                asynchronous=False,
            )

    def close(self) -> None:
        self._consumer.close()


def list_dead_letters(settings: Settings, *, limit: int | None = None) -> list[DeadLetter]:
    """Every dead letter (or the first `limit`), each marked pending unless replayed."""
    reader = _DlqReader(settings, from_start=True)
    try:
        messages = reader.read(limit)
        return [
            _describe(m, (m.offset() or 0) >= reader.committed.get(m.partition() or 0, -1))
            for m in messages
        ]
    finally:
        reader.close()


def replay(settings: Settings, *, limit: int | None = None) -> list[DeadLetter]:
    """Put pending dead letters back on the orders topic; return what was replayed."""
    reader = _DlqReader(settings, from_start=False)
    try:
        messages = reader.read(limit)
        if not messages:
            return []
        producer = Producer(producer_config(settings.kafka, "flashgate-dlq-replay"))
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err.str())

        for message in messages:
            producer.produce(
                settings.kafka.orders_topic,
                value=message.value(),
                key=message.key(),
                headers=replay_headers(message.headers()),
                on_delivery=on_delivery,
            )
            producer.poll(0)
        remaining = producer.flush(KAFKA_TIMEOUT_S)
        if remaining or failures:
            # Nothing is committed: the next replay tries these letters again.
            raise KafkaUnavailable(
                f"replay not acknowledged by Kafka ({remaining} pending, "
                f"{len(failures)} refused: {failures[:1]})"
            )
        reader.commit(messages)
        return [_describe(m, pending=False) for m in messages]
    finally:
        reader.close()


# -- the `flashgate dlq` command --------------------------------------------------------


def _when(failed_at: float | None) -> str:
    if failed_at is None:
        return "?"
    return datetime.fromtimestamp(failed_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print(letters: list[DeadLetter], as_json: bool) -> None:
    for letter in letters:
        if as_json:
            print(json.dumps(msgspec.to_builtins(letter)))
        else:
            state = "pending" if letter.pending else "replayed"
            print(
                f"{letter.partition}:{letter.offset}\t{letter.order_id or '?'}\t{state}\t"
                f"attempts={letter.attempts}\treplays={letter.replayed_before}\t"
                f"{_when(letter.failed_at)}\t{letter.source}\t{letter.reason}"
            )


def cmd_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    letters = list_dead_letters(settings, limit=args.limit)
    _print(letters, args.json)
    if not args.json:
        pending = sum(1 for letter in letters if letter.pending)
        print(f"{len(letters)} dead letters, {pending} not replayed")
    return 0


def cmd_dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    replayed = replay(settings, limit=args.limit)
    _print(replayed, args.json)
    if not args.json:
        print(f"replayed {len(replayed)} dead letters to {settings.kafka.orders_topic}")
    return 0


def add_dlq_commands(commands: Any) -> None:
    """Register `flashgate dlq list|replay` on the CLI's sub-parsers."""
    dlq = commands.add_parser("dlq", help="list or replay dead-lettered orders")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = actions.add_parser("list", help="print every dead letter and its reason")
    listing.set_defaults(run=cmd_dlq_list)
    again = actions.add_parser("replay", help="put dead letters not yet replayed back on orders")
    again.set_defaults(run=cmd_dlq_replay)
    for sub in (listing, again):
        sub.add_argument("--limit", type=int, default=None, help="at most this many")
        sub.add_argument("--json", action="store_true", help="one JSON object per line")
