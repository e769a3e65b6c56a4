"""`xtcp2 top`: a full-screen live view of every TCP connection, like htop for sockets.

    xtcp2 top [-target HOST:PORT] [--local] [-interval 1s] [FILTER ...]

FILTER is ss-style (see xtcp2/ui/filter.py), e.g. `state established and dport = :443`.
Keys: s/S sort by next/previous column (or click a header), r reverse, f or / filter,
g group by namespace/container/off, p pause, ? help, q quit.
"""
from __future__ import annotations

import sys
import time
from typing import Sequence

from ..argparse_go import parse_duration
from ..argparse_go import parser as go_parser
from . import filter as flt
from .model import COLUMN_NAMES, ConnTable, cells, group_conns, human_bytes, sort_conns

MAX_ROWS = 2000  # more rows than any terminal shows; keeps a refresh cheap with 100k sockets
GROUPS = ("", "netns", "container")
HELP = """\
xtcp2 top — live TCP connections

  s / S     sort by the next / previous column (or click a column header)
  r         reverse the sort order
  f or /    edit the filter (ss syntax: state established and dport = :443;
            src 10.0.0.0/8, sport > :1024, netns = NAME, container = NAME,
            and / or / not / parentheses); empty shows everything
  g         group rows by namespace, by container, or not at all
  p         pause / resume the display (records are still counted)
  ?         this help        q   quit

Press any key to close this help."""


def build_app(source, table: ConnTable, keep_text: str, title: str):
    """The textual App; imported lazily so `xtcp2` itself never pays for textual."""
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import Vertical
    from textual.screen import ModalScreen
    from textual.widgets import DataTable, Footer, Input, Sparkline, Static

    class HelpScreen(ModalScreen):
        def compose(self) -> ComposeResult:
            yield Static(HELP, id="help")

        def on_key(self, event) -> None:
            event.stop()
            self.app.pop_screen()

    class TopApp(App):
        CSS = """
        #summary { height: 2; background: $boost; }
        #status { height: 1; color: $text-muted; }
        #conns { height: 1fr; }
        #detail { height: 7; border-top: solid $accent; }
        #detail Sparkline { height: 2; }
        #filter { dock: bottom; display: none; }
        #filter.editing { display: block; }
        HelpScreen { align: center middle; }
        #help { width: 80; height: auto; border: round $accent; padding: 1 2; background: $panel; }
        """
        BINDINGS = [
            Binding("q", "quit", "quit"),
            Binding("s", "sort(1)", "sort"),
            Binding("S", "sort(-1)", "sort back", show=False),
            Binding("r", "reverse", "reverse"),
            Binding("f", "edit_filter", "filter"),
            Binding("slash", "edit_filter", "filter", show=False),
            Binding("g", "group", "group"),
            Binding("p", "pause", "pause"),
            Binding("question_mark", "help", "help"),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.title = title
            self.sort_col = "RTT_MS"
            self.reverse = True
            self.group = ""
            self.paused = False
            self.filter_text = keep_text
            self.keep = flt.parse(keep_text) if keep_text else None
            self.filter_error = ""
            self.selected_key: str | None = None
            self.shown = 0

        def compose(self) -> ComposeResult:
            yield Static("", id="summary")
            yield Static("", id="status")
            yield DataTable(id="conns", cursor_type="row", zebra_stripes=True)
            with Vertical(id="detail"):
                yield Static("", id="detail-title")
                yield Sparkline([], id="rtt-spark")
                yield Sparkline([], id="tx-spark")
            yield Input(placeholder="ss-style filter, Enter to apply, Esc to cancel", id="filter")
            yield Footer()

        def on_mount(self) -> None:
            source.start()
            self.query_one("#conns", DataTable).focus()
            self.refresh_view()
            self.set_interval(1.0, self.refresh_view)

        # ---- actions ---------------------------------------------------------------
        def action_sort(self, step: int) -> None:
            i = COLUMN_NAMES.index(self.sort_col)
            self.sort_col = COLUMN_NAMES[(i + step) % len(COLUMN_NAMES)]
            self.refresh_view(force=True)

        def action_reverse(self) -> None:
            self.reverse = not self.reverse
            self.refresh_view(force=True)

        def action_group(self) -> None:
            self.group = GROUPS[(GROUPS.index(self.group) + 1) % len(GROUPS)]
            self.refresh_view(force=True)

        def action_pause(self) -> None:
            self.paused = not self.paused
            self.refresh_view(force=True)

        def action_help(self) -> None:
            self.push_screen(HelpScreen())

        def action_edit_filter(self) -> None:
            box = self.query_one("#filter", Input)
            box.value = self.filter_text
            box.add_class("editing")
            self.call_after_refresh(box.focus)  # a hidden widget takes focus only once shown

        def on_input_submitted(self, event: Input.Submitted) -> None:
            text = event.value.strip()
            try:
                self.keep = flt.parse(text) if text else None
                self.filter_text, self.filter_error = text, ""
            except flt.FilterError as e:
                self.filter_error = str(e)  # the old filter stays in force
            self._close_filter()
            self.refresh_view(force=True)

        def on_key(self, event) -> None:
            box = self.query_one("#filter", Input)
            if event.key == "escape" and box.has_class("editing"):
                self._close_filter()

        def _close_filter(self) -> None:
            box = self.query_one("#filter", Input)
            box.remove_class("editing")
            self.query_one("#conns", DataTable).focus()

        def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
            name = str(event.label)
            if name in COLUMN_NAMES:
                self.reverse = not self.reverse if name == self.sort_col else True
                self.sort_col = name
                self.refresh_view(force=True)

        def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
            if event.row_key is not None and event.row_key.value is not None:
                self.selected_key = event.row_key.value
                self._show_detail()

        # ---- drawing ---------------------------------------------------------------
        def refresh_view(self, force: bool = False) -> None:
            if self.paused and not force:
                self._status()
                return
            source.tick()
            now = time.monotonic()
            conns = table.snapshot(self.keep)
            s = table.summary(conns)
            states = "  ".join(f"{k} {v}" for k, v in sorted(s.by_state.items(), key=lambda kv: -kv[1]))
            self.query_one("#summary", Static).update(
                f"sockets {s.total}   {states}\n"
                f"opens {s.opens_per_s:.1f}/s  closes {s.closes_per_s:.1f}/s   "
                f"rtt p50 {s.rtt_p50_ms:.2f} ms  p99 {s.rtt_p99_ms:.2f} ms   retrans {s.retrans_per_s:.1f}/s")
            dt = self.query_one("#conns", DataTable)
            if self.paused:  # a forced redraw while paused only updates the status line
                self._status()
                return
            dt.clear(columns=True)
            if self.group:
                dt.add_columns(self.group.upper(), "CONNS", "ESTAB", "TX/s", "RX/s", "RTT_P50", "RETRANS")
                groups = group_conns(conns, self.group)
                groups.sort(key=lambda g: (g.conns, g.name), reverse=True)
                for g in groups[:MAX_ROWS]:
                    dt.add_row(g.name, str(g.conns), str(g.established), human_bytes(g.tx_bps),
                               human_bytes(g.rx_bps), f"{g.rtt_p50_ms:.2f}", str(g.retrans), key=f"g:{g.name}")
                self.shown = min(len(groups), MAX_ROWS)
            else:
                dt.add_columns(*[f"{n}{(' ▼' if self.reverse else ' ▲') if n == self.sort_col else ''}"
                                 for n in COLUMN_NAMES])
                rows = sort_conns(conns, self.sort_col, self.reverse, now)[:MAX_ROWS]
                self._rows = {str(c.key): c for c in rows}
                for c in rows:
                    dt.add_row(*cells(c, now), key=str(c.key))
                self.shown = len(rows)
                if self.selected_key in self._rows:
                    dt.move_cursor(row=dt.get_row_index(self.selected_key))
            self._status()
            self._show_detail()

        def _status(self) -> None:
            parts = [f"sort {self.sort_col} {'desc' if self.reverse else 'asc'}",
                     f"filter: {self.filter_text or '(none)'}", f"rows {self.shown}"]
            if self.group:
                parts.append(f"grouped by {self.group}")
            if self.paused:
                parts.append("PAUSED")
            if self.filter_error:
                parts.append(f"bad filter: {self.filter_error}")
            if source.error:
                parts.append(source.error)
            self.query_one("#status", Static).update("  |  ".join(parts))

        def _show_detail(self) -> None:
            c = getattr(self, "_rows", {}).get(self.selected_key) if not self.group else None
            title = self.query_one("#detail-title", Static)
            if c is None:
                title.update("select a connection for its RTT and throughput history")
                self.query_one("#rtt-spark", Sparkline).data = []
                self.query_one("#tx-spark", Sparkline).data = []
                return
            title.update(f"{c.local} -> {c.peer}  {c.state_text}  netns {c.netns}   "
                         f"RTT (ms) last {c.rtt_ms:.2f}, max {max(c.rtt_hist, default=0):.2f}   "
                         f"throughput tx {human_bytes(c.tx_bps)}/s rx {human_bytes(c.rx_bps)}/s")
            self.query_one("#rtt-spark", Sparkline).data = list(c.rtt_hist)
            self.query_one("#tx-spark", Sparkline).data = [t + r for t, r in zip(c.tx_hist, c.rx_hist)]

        def on_unmount(self) -> None:
            source.stop()

    return TopApp()


def build_parser():
    p = go_parser(prog="xtcp2 top", description="Live full-screen view of TCP connections.")
    p.add_argument("-target", "--target", default="127.0.0.1:8889",
                   help="daemon gRPC address HOST:PORT (default 127.0.0.1:8889)")
    p.add_argument("--local", "-local", action="store_true",
                   help="poll netlink in this process instead of reading a daemon (needs root)")
    p.add_argument("-interval", "--interval", type=parse_duration, default=1.0,
                   help="--local poll interval (Go duration, default 1s)")
    p.add_argument("--netns", "-netns", action="append", default=[], metavar="NAME",
                   help="--local: only this namespace (repeatable)")
    p.add_argument("filter", nargs="*", help="ss-style filter, e.g. state established and dport = :443")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    text = " ".join(args.filter)
    try:
        flt.parse(text)
    except flt.FilterError as e:
        print(f"xtcp2 top: bad filter: {e}", file=sys.stderr)
        return 2
    if not 0.05 <= args.interval <= 3600:
        print("xtcp2 top: -interval must be between 50ms and 1h", file=sys.stderr)
        return 2
    try:
        import textual  # noqa: F401
    except ImportError:
        print("xtcp2 top: needs the 'textual' package (pip install 'xtcp2[ui]')", file=sys.stderr)
        return 2
    table = ConnTable()
    if args.local:
        from .source import LocalSource
        source = LocalSource(args.interval, args.netns, table)
        title = "xtcp2 top (local)"
    else:
        from .source import StreamSource
        source = StreamSource(args.target, table)
        title = f"xtcp2 top ({args.target})"
    build_app(source, table, text, title).run()
    return 0
