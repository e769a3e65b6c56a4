"""kafka:HOST:PORT[,HOST:PORT...][?topic=xtcp&compression=zstd&key=hostname]

One payload = one Kafka message (with protobufList: varint(len)+Envelope, what
ClickHouse's Kafka engine reads with kafka_format='ProtobufList'). confluent-kafka
(librdkafka) producer with acks=all and the idempotent producer on; delivery reports
decide what counts as sent, and a message librdkafka gives up on is counted dropped.

Options: topic (default -topic), compression auto|none|gzip|snappy|lz4|zstd (default
-kafkaCompression, whose '' means auto), key none|hostname (message key; hostname keeps
a host's records in one partition), lingerMs (default 5), deliveryTimeoutMs (how long
librdkafka keeps retrying one message; default -produceTimeout, else 300000),
stallTimeoutMs (see below, default 30000), plus the common queue options.

Compression "auto" is upstream's preference list zstd, lz4, snappy, none: the first
codec the broker takes. A broker that refuses a codec (UNSUPPORTED_COMPRESSION_TYPE, or
a protocol too old for it) makes the producer step down to the next one; the refused
messages are taken back and sent again with it.

Security (upstream has none; these follow librdkafka's names):
    tls=1            TLS to the brokers (implied by caFile/certFile)
    caFile=PATH      CA bundle to verify the brokers (default: the system store)
    certFile=PATH, keyFile=PATH   client certificate (mutual TLS); a key password comes
                     from XTCP2_KAFKA_SSL_KEY_PASSWORD or ..._FILE
    sasl=plain|scram-sha-256|scram-sha-512   SASL login (over TLS when tls=1), user and
                     password from XTCP2_KAFKA_USER and XTCP2_KAFKA_PASSWORD (or
                     XTCP2_KAFKA_PASSWORD_FILE), never from the command line

With -kafkaSchemaUrl, the record .proto (-xtcpProtoFile, default the packaged one) is
registered under "<topic>-value" when the destination first connects, as upstream does;
a failure is logged, not fatal (ClickHouse reads with its own copy of the .proto).

A broker that comes back without its state (disk lost, in-memory broker restarted)
no longer knows the idempotent producer's id, and librdkafka then waits forever. When
messages are outstanding and no delivery report arrived for stallTimeoutMs, the
producer is replaced: its unsent messages are taken back into our queue (purged, not
dropped) and sent again by a fresh producer, at the risk of a duplicate for what was in
flight.
"""
from __future__ import annotations

import logging
import os
import re
import time

from ..errors import DestinationError
from .base import register
from .queued import Backpressure, Item, QueuedDestination, num_option, parse_options, split_host_port

try:
    from confluent_kafka import KafkaError, KafkaException, Producer
except ImportError as e:  # surfaced by open_destination as "needs a library"
    raise ImportError("confluent-kafka (pip install 'xtcp2[kafka]')") from e

COMPRESSIONS = ("auto", "none", "gzip", "snappy", "lz4", "zstd")
AUTO_PREFERENCE = ("zstd", "lz4", "snappy", "none")   # upstream's resolveKafkaCompression
SASL_MECHANISMS = {"plain": "PLAIN", "scram-sha-256": "SCRAM-SHA-256", "scram-sha-512": "SCRAM-SHA-512"}
TOPIC_RE = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


class _DebugLog:
    """librdkafka's own lines (one per failed reconnect) go to debug; the wrapper logs
    one line per state change instead."""

    _log = logging.getLogger("xtcp2.dest.kafka.librdkafka")

    def log(self, level, fmt, *args) -> None:
        self._log.debug(fmt, *args)


_LIBRDKAFKA_LOG = _DebugLog()
log = logging.getLogger(__name__)


@register("kafka")
class KafkaDestination(QueuedDestination):
    acks_async = True

    def __init__(self, address: str, config) -> None:
        servers, _, query = address.partition("?")
        opts = parse_options("kafka", query, {"topic", "compression", "key", "lingerMs", "deliveryTimeoutMs",
                                              "stallTimeoutMs", "tls", "caFile", "certFile", "keyFile", "sasl"})
        super().__init__(address, config, opts)
        if not servers:
            raise DestinationError("kafka: needs host:port, e.g. kafka:127.0.0.1:9092")
        self.bootstrap = ",".join(f"{h}:{p}" if ":" not in h else f"[{h}]:{p}"
                                  for h, p in (split_host_port("kafka", s.strip()) for s in servers.split(",")))
        self.topic = opts.get("topic", config.topic) or "xtcp"
        if not TOPIC_RE.match(self.topic):
            raise DestinationError(f"kafka: topic {self.topic!r} is not valid (1-249 of [a-zA-Z0-9._-])")
        compression = opts.get("compression", config.kafka_compression or "auto") or "auto"
        if compression not in COMPRESSIONS:
            raise DestinationError(f"kafka: compression {compression!r} unknown; valid: {', '.join(COMPRESSIONS)}")
        self.auto_compression = compression == "auto"
        self._codecs = list(AUTO_PREFERENCE) if self.auto_compression else [compression]
        self.compression = self._codecs[0]
        self._downgrade = False
        self.security = self._security(opts)
        key = opts.get("key", "none")
        if key not in ("none", "hostname"):
            raise DestinationError(f"kafka: key {key!r} unknown; valid: none, hostname")
        self.key = config.hostname.encode() if key == "hostname" else None
        self.linger_ms = num_option("kafka", opts, "lingerMs", 5, 0)
        produce_ms = int(config.kafka_produce_timeout * 1000)
        self.delivery_timeout_ms = num_option("kafka", opts, "deliveryTimeoutMs",
                                              max(produce_ms, 1000) if produce_ms else 300000, 1000)
        self.schema_url = config.kafka_schema_url
        self.schema_id: int | None = None
        self.stall_timeout = num_option("kafka", opts, "stallTimeoutMs", 30000, 100) / 1000
        self._producer: Producer | None = None
        self._requeue_purged = False
        self._last_progress = 0.0
        self.producers_replaced = 0
        self._fatal = ""
        self._topic_ok = False
        self._broker_down = False
        self.start()

    @staticmethod
    def _security(opts: dict[str, str]) -> dict[str, str]:
        """librdkafka settings for TLS / SASL; secrets from the environment or files."""
        from .http import read_secret
        tls = opts.get("tls", "0") not in ("0", "false", "") or any(k in opts for k in ("caFile", "certFile", "keyFile"))
        out: dict[str, str] = {}
        for opt, key in (("caFile", "ssl.ca.location"), ("certFile", "ssl.certificate.location"),
                         ("keyFile", "ssl.key.location")):
            if opt in opts:
                if not os.path.isfile(opts[opt]) or not os.access(opts[opt], os.R_OK):
                    raise DestinationError(f"kafka: {opt} {opts[opt]} is not a readable file")
                out[key] = opts[opt]
        if ("certFile" in opts) != ("keyFile" in opts):
            raise DestinationError("kafka: certFile and keyFile go together")
        key_password = read_secret("XTCP2_KAFKA_SSL_KEY_PASSWORD")
        if key_password:
            out["ssl.key.password"] = key_password
        sasl = opts.get("sasl", "")
        if sasl:
            if sasl not in SASL_MECHANISMS:
                raise DestinationError(f"kafka: sasl {sasl!r} unknown; valid: {', '.join(SASL_MECHANISMS)}")
            user, password = os.environ.get("XTCP2_KAFKA_USER", ""), read_secret("XTCP2_KAFKA_PASSWORD")
            if not user or not password:
                raise DestinationError("kafka: sasl needs XTCP2_KAFKA_USER and XTCP2_KAFKA_PASSWORD "
                                       "(or XTCP2_KAFKA_PASSWORD_FILE) in the environment")
            out.update({"sasl.mechanism": SASL_MECHANISMS[sasl], "sasl.username": user, "sasl.password": password})
        out["security.protocol"] = ("SASL_SSL" if tls else "SASL_PLAINTEXT") if sasl else ("SSL" if tls else "PLAINTEXT")
        return out

    def _make_producer(self) -> Producer:
        return Producer({
            **self.security,
            "bootstrap.servers": self.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": self.compression,
            "linger.ms": self.linger_ms,
            "message.timeout.ms": self.delivery_timeout_ms,
            # librdkafka queues too while the broker is away: bound it like ours
            "queue.buffering.max.messages": self.queue_max,
            "logger": _LIBRDKAFKA_LOG,
            # one Envelope per message, flushed at 768 KiB by default: allow headroom
            # above librdkafka's 1 MB default (the broker's own limit still applies;
            # a message it rejects is counted as dropped)
            "message.max.bytes": 8 << 20,
            "error_cb": self._on_error,
            "client.id": f"xtcp2-{self.config.hostname}",
        })

    def _on_error(self, err) -> None:
        # librdkafka keeps our payloads and retries by itself, so without this an outage
        # would show no error until messages time out: count every failed attempt
        self._count_error()
        if err.fatal():
            self._fatal = err.str()
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._last_error = f"broker {self.bootstrap} unreachable: {err.str()}"
            if not self._broker_down:
                self._broker_down = True
                log.warning("kafka %s: %s; queueing until it is back", self.where, self._last_error)

    def _register_schema(self) -> None:
        from .schema_registry import register_record_schema
        try:
            self.schema_id = register_record_schema(self.schema_url, self.topic, self.config.xtcp_proto_file)
            log.info("kafka: schema registered as %s-value at %s: id %d", self.topic, self.schema_url, self.schema_id)
        except DestinationError as e:
            log.warning("kafka: schema registration (non-fatal): %s", e)

    def _connect(self) -> None:
        if self.schema_url and self.schema_id is None:
            self._register_schema()
            self.schema_id = self.schema_id if self.schema_id is not None else -1  # tried once per destination
        if self._producer is None or self._fatal:
            if self._producer is not None:
                self._abandon_producer(requeue=True)
            self._fatal = ""
            self._producer = self._make_producer()
            self._topic_ok = False
        if not self._topic_ok:
            self._check_topic()
            self._topic_ok = True

    def _check_topic(self) -> None:
        try:
            md = self._producer.list_topics(self.topic, timeout=5)
        except KafkaException as e:
            raise DestinationError(f"kafka: broker {self.bootstrap} unreachable: {e.args[0].str()}") from None
        t = md.topics.get(self.topic)
        if t is not None and t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise DestinationError(f"kafka: topic {self.topic!r} does not exist on {self.bootstrap}")
        if t is not None and t.error is not None and t.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise DestinationError(f"kafka: not authorized for topic {self.topic!r} on {self.bootstrap}")

    def _abandon_producer(self, requeue: bool, serve: float = 2.0) -> None:
        """The old producer can never deliver again (fatal error, stall) or we shut down.

        Purging makes librdkafka report every message it holds as failed with
        _PURGE_*; with requeue those go back into our queue, otherwise they count as drops.
        """
        p, self._producer = self._producer, None
        self._topic_ok = False
        self._requeue_purged = requeue
        try:
            p.purge(in_queue=True, in_flight=True)
            p.flush(serve)  # serves the purge's delivery reports
        except Exception:  # noqa: BLE001
            pass
        finally:
            self._requeue_purged = False

    def _deliver(self, batch: list[Item]) -> None:
        """Hand the batch to librdkafka. Items handed over leave `batch`, so a retry after
        Backpressure or an error sends only the rest (never one payload twice)."""
        if self._fatal or self._producer is None:
            self._connect()
        if not self._pending:
            self._last_progress = time.monotonic()  # nothing was outstanding: start the stall clock
        done = 0
        try:
            for item in batch:
                self._handed(item)
                try:
                    self._producer.produce(self.topic, item.payload, self.key, on_delivery=self._report(item))
                except BufferError:
                    self._unhand(item)
                    # librdkafka's own queue is full: leave the item in ours, retry after back-off
                    raise Backpressure("kafka: producer queue full (broker slow or down)") from None
                except KafkaException as e:
                    self._unhand(item)
                    if e.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                        raise DestinationError(f"kafka: produce failed: {e.args[0].str()}") from None
                    self._count_error()
                    self._drop(item.records, f"kafka: message of {len(item.payload)} bytes too large")
                done += 1
        finally:
            del batch[:done]
        self._producer.poll(0)

    def _report(self, item: Item):
        def on_delivery(err, msg) -> None:
            self._last_progress = time.monotonic()
            if err is None:
                if self._broker_down:
                    self._broker_down = False
                    log.warning("kafka %s: delivering again", self.where)
                self._ack(item)
            elif self._requeue_purged and err.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
                self._requeue(item)
            elif self.auto_compression and self._refuses_codec(err) and len(self._codecs) > 1:
                self._downgrade = True   # the next codec in upstream's preference list
                self._requeue(item)
            else:
                self._nack(item, f"kafka: delivery failed: {err.str()}")
        return on_delivery

    def _refuses_codec(self, err) -> bool:
        """The broker refused the codec. librdkafka also fails zstd messages locally with
        _UNSUPPORTED_FEATURE when it cannot tell what the broker supports (a broker that
        is down): only a reachable broker's refusal counts, and never while closing."""
        if self._closed:
            return False
        if err.code() == KafkaError.UNSUPPORTED_COMPRESSION_TYPE:
            return True
        return err.code() == KafkaError._UNSUPPORTED_FEATURE and not self._broker_down

    def _poll_acks(self, timeout: float) -> None:
        if self._producer is not None:
            self._producer.poll(timeout)
            if self._downgrade:
                self._downgrade = False
                refused = self._codecs.pop(0)
                self.compression = self._codecs[0]
                log.warning("kafka %s: broker refuses %s compression; using %s", self.where, refused,
                            self.compression)
                self._abandon_producer(requeue=True)
            elif self._fatal:
                self._last_error = self._fatal
                log.warning("kafka %s: producer fatal error (%s); starting a new producer", self.where, self._fatal)
                self._abandon_producer(requeue=True)
            elif self._pending and time.monotonic() - self._last_progress > self.stall_timeout:
                log.warning("kafka %s: no delivery report for %.0fs with %d records outstanding; "
                            "starting a new producer", self.where, self.stall_timeout, self._pending)
                self.producers_replaced += 1
                self._abandon_producer(requeue=True)
                self._last_progress = time.monotonic()

    def _close_transport(self, timeout: float) -> None:
        if self._producer is not None:
            left = self._producer.flush(timeout)
            if left:
                self._abandon_producer(requeue=False, serve=0.2)

    def _disconnect(self) -> None:
        # librdkafka reconnects by itself and keeps queued messages: keep the producer
        pass

