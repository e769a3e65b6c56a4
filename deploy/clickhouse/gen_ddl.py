"""Write deploy/clickhouse/sql/*.sql from the compiled .proto (xtcp2_kafka_to_clickhouse.ddl).

    python deploy/clickhouse/gen_ddl.py [--brokers redpanda-0:9092] [--check]
--check exits 1 when the committed files differ from what the schema gives (the test suite runs it).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from xtcp2.tools.kafka_to_clickhouse import ddl  # noqa: E402

OUT = Path(__file__).resolve().parent / "sql"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", default="localhost:9092")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    stale = []
    for name, sql in ddl(brokers=a.brokers).items():
        path = OUT / name
        if a.check:
            if not path.is_file() or path.read_text() != sql:
                stale.append(name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(sql)
    if stale:
        print(f"gen_ddl: out of date: {', '.join(stale)}; run python deploy/clickhouse/gen_ddl.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
