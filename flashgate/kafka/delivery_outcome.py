"""What a failed delivery report says about the record: definitely not written, or unknown.

librdkafka tracks, per message, whether it was *not persisted*, *possibly
persisted* or *persisted* (`rd_kafka_message_status`), but confluent-kafka does
not expose that status, only the error code of the delivery report. So the
classification is made from the code, and it errs on the safe side: only the
codes below prove the record was never written; every other failure is an
unknown outcome, whose reservation stays held until the reaper has looked for
the record in Kafka (found: accepted; proven absent: the units return).

Definite refusals, with the reason each proves the record absent:
- raised by librdkafka for a message that never left the client:
  `_QUEUE_FULL` (-184, the local queue is full; `produce()` raises it as
  `BufferError`), `_UNKNOWN_TOPIC` (-188) and `_UNKNOWN_PARTITION` (-190) (no
  such topic or partition in the metadata: nothing to send to), `_PURGE_QUEUE`
  (-152, purged while still queued), `_INVALID_ARG` (-186),
  `_KEY_SERIALIZATION` (-162), `_VALUE_SERIALIZATION` (-161), `_INVALID_TYPE`
  (-154);
- refused by the broker for the record's own content, so every earlier attempt
  of the same bytes was refused the same way: `MSG_SIZE_TOO_LARGE` (10),
  `INVALID_MSG` / CORRUPT_MESSAGE (2), `RECORD_LIST_TOO_LARGE` (18),
  `INVALID_TIMESTAMP` (32), `UNSUPPORTED_FOR_MESSAGE_FORMAT` (43),
  `INVALID_RECORD` (87).

Unknown outcomes include `_MSG_TIMED_OUT` (-192: `message.timeout.ms` passed;
the request may have been sent and written), `REQUEST_TIMED_OUT` (7),
`_TRANSPORT` (-195), `_PURGE_INFLIGHT` (-151), `_FATAL` (-150, the idempotent
producer's fatal state), `NOT_ENOUGH_REPLICAS_AFTER_APPEND` (20, written to the
leader) and, deliberately, errors that can change between two attempts of the
same record (`NOT_ENOUGH_REPLICAS` 19, `UNKNOWN_TOPIC_OR_PART` 3, the
authorization errors 29 and 31): a retry that met one of those may follow an
earlier attempt that was written.

Authentication and TLS failures (`_AUTHENTICATION` -169,
`SASL_AUTHENTICATION_FAILED` 58, `_SSL` -181) are deliberately not in the
list. Measured on a SASL_SSL broker with librdkafka 2.16: a producer whose
connection is refused (wrong password, unknown user, untrusted CA) reports
those codes only to its error callback; its queued records stay queued and
fail with `_MSG_TIMED_OUT`, so the codes never reach a delivery report in that
case. Where one could, the record may already have gone out on an earlier,
authenticated connection (a retry after a reconnect whose re-authentication
failed: a rotated password, a revoked certificate), so the code would not
prove it absent. The definite answer for a refused connection is given earlier
instead: the gateway refuses an order before reserving anything while its
producer's connection is refused (`flashgate.kafka.connection`).
"""

from __future__ import annotations

from confluent_kafka import KafkaError

from flashgate.errors import KafkaOutcomeUnknown, KafkaRefused, KafkaUnavailable

# Codes as librdkafka numbers them (confluent-kafka's KafkaError constants), so the
# set reads the same as the table above and needs no attribute that a version lacks.
DEFINITELY_NOT_WRITTEN = frozenset(
    {
        -184,  # _QUEUE_FULL
        -188,  # _UNKNOWN_TOPIC
        -190,  # _UNKNOWN_PARTITION
        -152,  # _PURGE_QUEUE
        -186,  # _INVALID_ARG
        -162,  # _KEY_SERIALIZATION
        -161,  # _VALUE_SERIALIZATION
        -154,  # _INVALID_TYPE
        2,  # INVALID_MSG (CORRUPT_MESSAGE)
        10,  # MSG_SIZE_TOO_LARGE
        18,  # RECORD_LIST_TOO_LARGE
        32,  # INVALID_TIMESTAMP
        43,  # UNSUPPORTED_FOR_MESSAGE_FORMAT
        87,  # INVALID_RECORD
    }
)


def definitely_not_written(code: int) -> bool:
    """True only when the error code proves the record was never written."""
    return code in DEFINITELY_NOT_WRITTEN


def delivery_failure(err: KafkaError) -> KafkaUnavailable:
    """The typed failure for a delivery report that carries `err`."""
    code = err.code()
    if definitely_not_written(code):
        return KafkaRefused(f"Kafka refused the record: {err.str()} ({code})")
    return KafkaOutcomeUnknown(f"Kafka's answer is unknown: {err.str()} ({code})")
