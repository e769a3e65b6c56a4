"""csv and tsv: one line per record, human values (marshal/human.py), the header line
once per marshaller (i.e. once per run of the daemon, as upstream), columns chosen by
-columns. Quoting is the csv module's (RFC 4180); tsv is the same with tabs."""
from __future__ import annotations

import csv
import io
import threading

from ..records.envelope import EncodedEnvelope
from .human import header_name, human_row, select_columns


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if v else "0"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class TableMarshaller:
    def __init__(self, delimiter: str, columns: str = "") -> None:
        self.delimiter = delimiter
        self.columns = select_columns(columns)
        self._header_done = False
        self._lock = threading.Lock()

    def configured(self, config) -> "TableMarshaller":
        """A fresh marshaller (own header) with config's -columns."""
        return TableMarshaller(self.delimiter, getattr(config, "csv_columns", ""))

    def __call__(self, env: EncodedEnvelope) -> bytes:
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=self.delimiter, lineterminator="\n")
        with self._lock:
            if not self._header_done:
                w.writerow(header_name(fd) for fd in self.columns)
                self._header_done = True
        for r in env.message().row:
            w.writerow(_cell(v) for v in human_row(r, self.columns))
        return buf.getvalue().encode()


csv_marshal = TableMarshaller(",")
tsv_marshal = TableMarshaller("\t")
