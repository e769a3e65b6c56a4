"""xtcp2_register_schema: register the record .proto with a Confluent-compatible schema
registry under "<topic>-value" and/or print the latest id (upstream's register_schema).

    xtcp2_register_schema -kafkaSchemaUrl http://localhost:18081 -topic xtcp -register
    xtcp2_register_schema -kafkaSchemaUrl http://localhost:18081 -topic xtcp        # id:N

-filename (upstream's name) or -xtcpProtoFile: the .proto (default the packaged
xtcp_flat_record.proto). -get (default true) prints "id:N" as upstream does.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..argparse_go import parser as go_parser
from ..errors import DestinationError


def _bool(text: str) -> bool:
    return text.lower() in ("1", "true", "t", "yes")


def main(argv: list[str] | None = None) -> int:
    from ..dest.schema_registry import SchemaRegistry, default_proto_file
    p = go_parser(prog="xtcp2_register_schema", description=__doc__.splitlines()[0])
    p.add_argument("-kafkaSchemaUrl", "--kafkaSchemaUrl", default="http://localhost:18081")
    p.add_argument("-filename", "--filename", "-xtcpProtoFile", "--xtcpProtoFile", dest="filename", default="")
    p.add_argument("-topic", "--topic", default="xtcp")
    p.add_argument("-register", "--register", nargs="?", const=True, default=False, type=_bool)
    p.add_argument("-get", "--get", nargs="?", const=True, default=True, type=_bool)
    a = p.parse_args(argv)
    subject = f"{a.topic}-value"
    try:
        reg = SchemaRegistry(a.kafkaSchemaUrl)
        if a.register:
            path = a.filename or default_proto_file()
            try:
                schema = Path(path).read_text(encoding="utf-8")
            except OSError as e:
                raise DestinationError(f"{path}: {e.strerror or e}") from None
            print(f"registered {subject}: id {reg.register(subject, schema)}", file=sys.stderr)
        if a.get:
            print(f"id:{reg.latest_id(subject)}")
    except DestinationError as e:
        print(f"xtcp2_register_schema: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
