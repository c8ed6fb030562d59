"""What the Kafka client library's log records mean to an operator.

aiokafka logs ERROR for conditions it retries by itself: while a broker elects partition leaders or loads the
group coordinator (``Failed fetch offsets … NotLeaderForPartitionError``, ``Group Coordinator Request failed``),
and every 100 ms while a broker is unreachable (``Unable connect to node``). A new user cannot act on any of it,
and the flood hides what they can act on. ``classify`` (a pure function) decides per record:

* transient, retriable conditions → DEBUG (shown only with ``HUB_LOG_LEVEL=DEBUG``);
* conditions that need the operator (authentication or authorisation refused) → kept at ERROR, with what to do
  appended;
* conditions that are transient at first but need the operator if they last (the broker unreachable; a topic
  missing from the metadata, normal for a moment after the hub creates it, but not for long unless the broker
  refuses to create it) → DEBUG per record, and ``KafkaLogFilter`` logs one WARNING saying what to check once
  they have lasted ``Settings.broker_unreachable_warn`` seconds (and again every that many seconds);
* anything else → unchanged (an unexpected library error is still seen).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("hub")

KAFKA_LOGGER_PREFIXES = ("aiokafka", "kafka")

# Retriable by the client itself: leader elections, coordinator moves, rebalances, a broker restarting.
TRANSIENT = (
    "NotLeaderForPartition", "NotLeaderOrFollower", "LeaderNotAvailable", "GroupCoordinatorNotAvailable",
    "CoordinatorNotAvailable", "NotCoordinator", "CoordinatorLoadInProgress", "Group Coordinator Request failed",
    "FindCoordinator Request failed", "Failed fetch offsets", "Failed fetch messages", "NodeNotReady",
    "RequestTimedOut", "KafkaConnectionError", "Heartbeat failed", "Heartbeat send request failed",
    "Heartbeat session expired", "Marking the coordinator dead", "marking coordinator dead",
    "RebalanceInProgress", "OffsetCommit failed", "LeaveGroup request failed", "Unable to request metadata",
    "Unable to update metadata", "Error fetching metadata", "Topic %s is not available during auto-create",
    "is not available during auto-create", "No broker metadata found", "Got error produce response",
    "Auto offset commit failed", "Failed to commit on finallization", "UnknownMemberId", "IllegalGeneration",
)
UNREACHABLE = ("Unable connect to node", "Connection refused", "Connect call failed")
# (pattern, level, what to do)
ACTIONABLE = (
    ("SaslAuthentication", logging.ERROR,
     "the broker refused the hub's credentials: check HUB_KAFKA_USERNAME / HUB_KAFKA_PASSWORD (for a local secure "
     "broker, the password in its state dir's hub.password)"),
    ("Authentication failed", logging.ERROR,
     "the broker refused the hub's credentials: check HUB_KAFKA_USERNAME / HUB_KAFKA_PASSWORD"),
    ("AuthorizationFailed", logging.ERROR,
     "the broker's ACLs deny the hub: it needs a super user or the ACLs `hub acl sync` grants"),
    ("not authorized", logging.ERROR,
     "the broker's ACLs deny the hub: it needs a super user or the ACLs `hub acl sync` grants"),
    ("unauthorized", logging.ERROR,
     "the broker's ACLs deny the hub: it needs a super user or the ACLs `hub acl sync` grants"),
)
UNKNOWN_TOPIC = ("UnknownTopicOrPartition", "not found in cluster metadata", "unknown topic")
UNKNOWN_TOPIC_ADVICE = ("the hub creates its own and its nodes' topics, so check that the broker lets the hub "
                        "create topics (ACLs, CreateTopics policy) and that nobody deleted it")


@dataclass(frozen=True)
class Verdict:
    level: int
    advice: str | None = None
    lasting: str | None = None  # a condition to report if it lasts: "broker" or "topic <name>"


_TOPIC_NAME = re.compile(r"[Tt]opic '?([A-Za-z0-9._-]+)'?")


def classify(level: int, message: str) -> Verdict:
    """The level a Kafka client record deserves, what the operator should do (if anything), and whether it is a
    condition to report if it lasts."""
    for pattern, actionable_level, advice in ACTIONABLE:
        if pattern.lower() in message.lower():
            return Verdict(max(level, actionable_level), advice)
    if any(p in message for p in UNKNOWN_TOPIC):
        name = _TOPIC_NAME.search(message)
        return Verdict(logging.DEBUG, lasting=f"topic {name.group(1) if name else '?'}")
    if any(p in message for p in UNREACHABLE):
        return Verdict(logging.DEBUG, lasting="broker")
    if any(p in message for p in TRANSIENT):
        return Verdict(logging.DEBUG)
    return Verdict(level)


class Outage:
    """When the broker has been unreachable long enough to tell the operator (a pure state machine over the
    times connection failures are seen; a gap of ``quiet_s`` without one ends the outage)."""

    def __init__(self, warn_after_s: float, quiet_s: float = 5.0) -> None:
        self.warn_after_s = warn_after_s
        self.quiet_s = quiet_s
        self.since: float | None = None
        self.last_seen: float | None = None
        self.warned_at: float | None = None

    def failure(self, now: float) -> float | None:
        """A connection failure at ``now``; returns the outage's length when it is time to warn, else None."""
        if self.last_seen is None or now - self.last_seen > self.quiet_s:
            self.since, self.warned_at = now, None
        self.last_seen = now
        assert self.since is not None
        length = now - self.since
        if length < self.warn_after_s:
            return None
        if self.warned_at is not None and now - self.warned_at < self.warn_after_s:
            return None
        self.warned_at = now
        return length


class KafkaLogFilter(logging.Filter):
    """Applies ``classify`` to the Kafka client loggers' records: lowers, raises or drops them, and reports the
    conditions that last."""

    def __init__(self, bootstrap: str, warn_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.warn_after_s = warn_after_s
        self.clock = clock
        self.lasting: dict[str, Outage] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return True
        verdict = classify(record.levelno, message)
        if verdict.lasting is not None:
            self._track(verdict.lasting)
        if verdict.level != record.levelno:
            if verdict.level < logging.getLogger().getEffectiveLevel():
                return False
            record.levelno, record.levelname = verdict.level, logging.getLevelName(verdict.level)
        if verdict.advice:
            record.msg, record.args = f"{message} -- {verdict.advice}", ()
        return True

    def _track(self, condition: str) -> None:
        outage = self.lasting.get(condition)
        if outage is None:
            if len(self.lasting) > 1000:  # bounded: topics come and go
                self.lasting.clear()
            outage = self.lasting[condition] = Outage(self.warn_after_s)
        length = outage.failure(self.clock())
        if length is None:
            return
        if condition == "broker":
            log.warning("the Kafka broker at %s has not answered for %.0f s: the hub retries, but nothing is "
                        "exchanged meanwhile. Check it runs (`hub broker status`, or your cluster's health) and "
                        "that HUB_BOOTSTRAP is right", self.bootstrap, length)
        else:
            log.warning("%s has been missing from the broker's metadata for %.0f s: %s", condition, length,
                        UNKNOWN_TOPIC_ADVICE)


def install_kafka_log_filter(log_filter: KafkaLogFilter) -> None:
    """Attach the filter to every Kafka client logger (logger filters are not inherited by child loggers, so each
    one aiokafka created at import gets it; the loggers stay at WARNING unless the hub logs at DEBUG)."""
    import aiokafka.admin  # noqa: F401 - their loggers must exist
    import aiokafka.consumer  # noqa: F401
    import aiokafka.producer  # noqa: F401

    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    for name in [n for n in list(logging.root.manager.loggerDict) if n.startswith(KAFKA_LOGGER_PREFIXES)]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, KafkaLogFilter) for f in logger.filters):
            logger.addFilter(log_filter)
        logger.setLevel(logging.DEBUG if debug else logging.WARNING)
