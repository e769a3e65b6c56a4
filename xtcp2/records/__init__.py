"""Records: the XtcpFlatRecord schema, the columnar encoder and envelope batching."""
