"""Terminal views of the records: `xtcp2 top` and its ss-style filter."""
