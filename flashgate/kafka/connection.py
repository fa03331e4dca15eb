"""What one Kafka client knows about its connection: the cause, when the brokers refuse it.

librdkafka retries a refused connection every few hundred milliseconds and
reports each attempt (error callback and log). `KafkaConnection` takes both
callbacks, keeps the current cause, and logs one line when the cause appears
or changes and one when the connection works again, instead of a line per
attempt.

A *security* cause means no request of this client reaches a broker: the SASL
handshake was refused (wrong password, unknown user), the TLS handshake failed
(untrusted CA, a client certificate refused), or the broker closed every
connection before its first answer (a plaintext client at a TLS listener).
The gateway refuses orders before reserving anything while one holds
(`flashgate.kafka.producer`). Other errors (a broker down) are logged the same way but
leave the order path as it is: a record may be in flight to a broker that
stalls.
"""

from __future__ import annotations

import logging
import re
import threading

from confluent_kafka import KafkaError

log = logging.getLogger("flashgate.kafka")

# librdkafka codes that mean the connection was refused by authentication or TLS.
AUTHENTICATION_CODES = frozenset(
    {
        -169,  # _AUTHENTICATION
        58,  # SASL_AUTHENTICATION_FAILED
    }
)
TLS_CODE = -181  # _SSL
# A transport error that is a TLS refusal (an alert, a failed verification) rather than
# a TLS connection that merely dropped.
TLS_FAILURE_MARKS = ("SSL routines", "certificate", "handshake")
# Disconnects before the first answer that make a protocol mismatch the likely cause:
# one can be a broker shutting down, several in a row are not.
MISMATCH_AFTER = 3
_ATTEMPT_DETAIL = re.compile(
    r"\s*\(after \d+ms in state [A-Z_]+(?:, \d+ identical error\(s\) suppressed)?\)"
)
_FIRST_REQUEST_CLOSED = "in state APIVERSION_QUERY"


def _steady(text: str) -> str:
    """The message without what changes at every attempt (timings, suppressed counts)."""
    return _ATTEMPT_DETAIL.sub("", text)


class Announcements:
    """Causes already logged by some client: a process has several clients (producer,
    admin, readers) meeting the same refusal, and one line says it."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def first(self, key: str) -> bool:
        """True if `key` was not said yet (and it is said now)."""
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True

    def withdraw(self, keys: set[str]) -> None:
        with self._lock:
            self._keys.difference_update(keys)


# The clients of one process share one: a line per cause per process.
PROCESS_ANNOUNCEMENTS = Announcements()


class KafkaConnection:
    """Error callback and logger for one librdkafka client (see the module docstring)."""

    def __init__(
        self,
        client: str,
        security_protocol: str,
        *,
        announcements: Announcements = PROCESS_ANNOUNCEMENTS,
    ) -> None:
        self.client = client
        self._announcements = announcements
        self._protocol = security_protocol
        self._lock = threading.Lock()
        self._security_cause: str | None = None
        self._other_cause: str | None = None
        self._first_request_closes = 0
        self.ever_connected = False
        # Keys this client announced (see _announce), withdrawn when it connects.
        self._own_announcements: set[str] = set()

    @property
    def refusal(self) -> str | None:
        """The security cause in force: no record of this client can reach Kafka."""
        return self._security_cause

    @property
    def cause(self) -> str | None:
        """Why the last attempt to reach Kafka failed (security or not), if it did."""
        return self._security_cause or self._other_cause

    def on_error(self, err: KafkaError) -> None:
        """librdkafka's `error_cb`."""
        code = err.code()
        text = _steady(err.str())
        if code in AUTHENTICATION_CODES:
            self._refused(text, "authentication")
        elif code == TLS_CODE or (
            code == KafkaError._TRANSPORT and any(mark in text for mark in TLS_FAILURE_MARKS)
        ):
            self._refused(text, "tls")
        elif self._security_cause is None:
            self._failed(f"{text} ({err.name()})")

    def log(self, level: int, fmt: str, *args: object) -> None:
        """librdkafka's log lines (the `logger` property): kept at debug, but a connection
        closed before its first answer counts towards a protocol mismatch."""
        message = fmt % args if args else fmt
        if _FIRST_REQUEST_CLOSED in message and "Disconnected" in message:
            with self._lock:
                self._first_request_closes += 1
                closes = self._first_request_closes
            if (
                closes >= MISMATCH_AFTER
                and self._security_cause is None
                and self._protocol in ("PLAINTEXT", "SASL_PLAINTEXT")
            ):
                self._refused(
                    "the broker closes every connection before answering: "
                    f"kafka.security_protocol is {self._protocol}; a TLS listener "
                    "(SSL or SASL_SSL) does this to a client that does not speak TLS",
                    "protocol",
                )
            return
        # Connection failures (facility FAIL) also reach `on_error`, which logs them once.
        if level >= logging.WARNING and not message.startswith("FAIL "):
            log.warning("%s: librdkafka: %s", self.client, message)
        else:
            log.debug("%s: librdkafka: %s", self.client, message)

    def connected(self) -> None:
        """A request got its answer: whatever failed before works now."""
        with self._lock:
            self._security_cause = None
            self._other_cause = None
            self._first_request_closes = 0
            self.ever_connected = True
            announced, self._own_announcements = self._own_announcements, set()
        if announced:
            self._announcements.withdraw(announced)
            log.info("%s: Kafka reachable again", self.client)

    def _refused(self, text: str, kind: str) -> None:
        # Retries of one failure word it differently ("SSL handshake failed: ..." then
        # "error:...:certificate verify failed"), and so do the clients of one process:
        # the first wording stays, and the kind decides whether it is news.
        with self._lock:
            if self._security_cause is not None:
                return
            self._security_cause = text
        if self._announce(f"refused:{kind}"):
            log.error("%s: Kafka refuses the connection: %s", self.client, text)

    def _failed(self, text: str) -> None:
        with self._lock:
            if self._other_cause == text:
                return
            self._other_cause = text
        if self._announce(text):
            log.warning("%s: Kafka: %s", self.client, text)

    def _announce(self, key: str) -> bool:
        """True if no client of this process has said `key` since the connection last worked."""
        if not self._announcements.first(key):
            return False
        with self._lock:
            self._own_announcements.add(key)
        return True
