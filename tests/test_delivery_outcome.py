"""Which failed delivery reports prove a record absent: pure classification, no broker."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from flashgate.errors import KafkaOutcomeUnknown, KafkaRefused
from flashgate.kafka.delivery_outcome import definitely_not_written, delivery_failure


@pytest.mark.parametrize(
    "code",
    [
        KafkaError._QUEUE_FULL,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._PURGE_QUEUE,
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
    ],
)
def test_a_record_that_never_left_or_was_refused_for_its_content_is_refused(code: int) -> None:
    assert definitely_not_written(code)
    assert isinstance(delivery_failure(KafkaError(code)), KafkaRefused)


@pytest.mark.parametrize(
    "code",
    [
        KafkaError._MSG_TIMED_OUT,  # message.timeout.ms passed, maybe in flight
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._PURGE_INFLIGHT,
        KafkaError._FATAL,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        # Can change between two attempts of the same record, one of which may have
        # been written: not proof of absence.
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    ],
)
def test_anything_that_may_have_been_written_is_an_unknown_outcome(code: int) -> None:
    assert not definitely_not_written(code)
    failure = delivery_failure(KafkaError(code))
    assert isinstance(failure, KafkaOutcomeUnknown)
    assert str(code) in str(failure)
