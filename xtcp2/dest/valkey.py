"""valkey:HOST:PORT[?mode=publish&key=xtcp&maxlen=100000&db=0]

Valkey / Redis through redis-py. One payload = one message (PUBLISH key payload, the
default, as upstream: a pub/sub channel named after -topic), one stream entry (XADD key *
d <payload> n <records>) or one list element (LPUSH key payload). Queued payloads go out
in pipelines of up to 100 commands.

PUBLISH is fire-and-forget on the server side: a message published while nobody is
subscribed is accepted (counted sent) and gone. Use mode=xadd (a stream: consumers can
read what they missed, trimmed by maxlen) or mode=lpush (a list) to keep the data.

Options: mode publish|xadd|lpush (default publish), key (channel/stream/list, default
-topic), maxlen (XADD: trim the stream to about this many entries; 0 = never, the
default), db (default 0), plus the common queue options. A password is read from the
environment variable XTCP2_VALKEY_PASSWORD (never from the command line), a user name
from XTCP2_VALKEY_USER.

Delivery is at least once: when the connection breaks mid-pipeline the whole batch is
sent again, so an entry may appear twice.
"""
from __future__ import annotations

import os

from ..errors import DestinationError
from .base import register
from .queued import Item, QueuedDestination, num_option, parse_options, split_host_port

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as e:
    raise ImportError("redis (pip install 'xtcp2[valkey]')") from e

MODES = ("publish", "xadd", "lpush")


@register("valkey")
class ValkeyDestination(QueuedDestination):
    batch_max_items = 100
    batch_max_bytes = 16 << 20

    def __init__(self, address: str, config) -> None:
        hostport, _, query = address.partition("?")
        opts = parse_options("valkey", query, {"mode", "key", "maxlen", "db"})
        super().__init__(address, config, opts)
        self.host, self.port = split_host_port("valkey", hostport, 6379)
        self.mode = opts.get("mode", "publish")
        if self.mode not in MODES:
            raise DestinationError(f"valkey: mode {self.mode!r} unknown; valid: {', '.join(MODES)}")
        self.key = opts.get("key", config.topic) or "xtcp"
        self.maxlen = num_option("valkey", opts, "maxlen", 0, 0)
        self.db = num_option("valkey", opts, "db", 0, 0)
        self._client: redis.Redis | None = None
        self.start()

    def _connect(self) -> None:
        c = redis.Redis(host=self.host, port=self.port, db=self.db, socket_timeout=5, socket_connect_timeout=3,
                        username=os.environ.get("XTCP2_VALKEY_USER") or None,
                        password=os.environ.get("XTCP2_VALKEY_PASSWORD") or None,
                        retry=Retry(NoBackoff(), 0))  # the queue wrapper retries, not redis-py
        try:
            c.ping()
        except redis.AuthenticationError as e:
            c.close()
            raise DestinationError(f"valkey {self.host}:{self.port}: authentication failed: {e}") from None
        except redis.ConnectionError as e:
            c.close()
            raise DestinationError(f"valkey {self.host}:{self.port}: unreachable: {e}") from None
        if self.mode == "xadd":
            t = c.type(self.key)
            if t not in (b"none", b"stream"):
                c.close()
                raise DestinationError(f"valkey: key {self.key!r} holds a {t.decode()}, not a stream")
        self._client = c

    def _deliver(self, batch: list[Item]) -> None:
        p = self._client.pipeline(transaction=False)
        for it in batch:
            if self.mode == "xadd":
                p.xadd(self.key, {"d": it.payload, "n": it.records},
                       maxlen=self.maxlen or None, approximate=True)
            elif self.mode == "lpush":
                p.lpush(self.key, it.payload)
            else:
                p.publish(self.key, it.payload)
        try:
            p.execute()
        except redis.RedisError as e:
            raise DestinationError(f"valkey {self.host}:{self.port}: {e}") from None

    def _disconnect(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                pass
            self._client = None
