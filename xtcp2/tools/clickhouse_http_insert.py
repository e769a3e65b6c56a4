"""xtcp2_clickhouse_http_insert: ProtobufList into ClickHouse over HTTP (our equivalent
of upstream's clickhouse_http_insert_protobuflist).

    xtcp2_clickhouse_http_insert --url http://127.0.0.1:8123 --dest
        print the -dest value that makes xtcp2 insert every payload straight into
        xtcp.xtcp_flat_records_ingest (one POST per Envelope, FORMAT ProtobufList)
    xtcp2_clickhouse_http_insert --url http://127.0.0.1:8123 FILE...
        insert protobufList files (e.g. written by -dest file:DIR?perEnvelope=1)

The rows go into xtcp.xtcp_flat_records_ingest (deploy/clickhouse/sql/05), whose MVs
route them by schema_version exactly as the Kafka MVs do. The server needs xtcp_flat_record.proto in its
format_schemas directory (deploy/clickhouse/README.md). Credentials come from the
environment (XTCP2_HTTP_USER, XTCP2_HTTP_PASSWORD or XTCP2_HTTP_PASSWORD_FILE), never
from the command line.
"""
from __future__ import annotations

import sys
from urllib.parse import quote, urlencode, urlsplit

from ..argparse_go import parser as go_parser
from .kafka_to_clickhouse import PROTO_FILE, ROW_MESSAGE


def insert_query(database: str = "xtcp") -> str:
    # the ingest table's MVs route each row to its schema_version's table, as the Kafka MVs do
    return f"INSERT INTO {database}.xtcp_flat_records_ingest FORMAT ProtobufList"


def dest_url(url: str, database: str = "xtcp") -> str:
    """The http(s) -dest that inserts each payload through database.xtcp_flat_records_ingest."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected http(s)://host:port, not {url!r}")
    params = urlencode({"query": insert_query(database), "format_schema": f"{PROTO_FILE}:{ROW_MESSAGE}"},
                       quote_via=quote)
    return f"{url.rstrip('/')}/?{params}"


def main(argv: list[str] | None = None) -> int:
    p = go_parser(prog="xtcp2_clickhouse_http_insert", description=__doc__.splitlines()[0])
    p.add_argument("--url", "-url", default="http://127.0.0.1:8123", help="ClickHouse HTTP interface")
    p.add_argument("--database", "-database", default="xtcp")
    p.add_argument("--dest", "-dest", action="store_true", help="print the xtcp2 -dest value and exit")
    p.add_argument("files", nargs="*", help="protobufList files, one Envelope each")
    a = p.parse_args(argv)
    try:
        target = dest_url(a.url, a.database)
    except ValueError as e:
        print(f"xtcp2_clickhouse_http_insert: {e}", file=sys.stderr)
        return 2
    if a.dest:
        print(target)
        return 0
    if not a.files:
        print("xtcp2_clickhouse_http_insert: give --dest or files to insert", file=sys.stderr)
        return 2
    from ..config import Config
    from ..dest import open_destination
    from ..errors import DestinationError
    try:
        d = open_destination(target + "&retries=3&flushTimeout=30", Config())
    except DestinationError as e:
        print(f"xtcp2_clickhouse_http_insert: {e}", file=sys.stderr)
        return 2
    for name in a.files:
        try:
            with open(name, "rb") as f:
                d.send(f.read(), 1)
        except OSError as e:
            print(f"xtcp2_clickhouse_http_insert: {name}: {e.strerror}", file=sys.stderr)
    d.close()
    print(f"inserted {d.sent_records} of {len(a.files)} files, {d.dropped_records} failed")
    return 0 if d.dropped_records == 0 and d.sent_records == len(a.files) else 1


if __name__ == "__main__":
    sys.exit(main())
