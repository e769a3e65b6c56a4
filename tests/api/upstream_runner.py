"""A gRPC client process built from upstream's .proto files, driven by JSON.

    python upstream_runner.py GEN_DIR TARGET < ops.json   -> JSON results on stdout

ops is a list; each op is one of
  ["unary", METHOD, REQUEST_JSON]                    ConfigService call
  ["stream", {"count": N, "timeout": S}]             FlatRecords, first N records
  ["poll", {"requests": K, "count": N, "timeout": S}]  PollFlatRecords
  ["clients", {"readers": R, "stalled": S, "seconds": T}]  concurrent FlatRecords streams
Results mirror the ops: {"ok": true, ...} or {"ok": false, "code": "...", "details": "..."}.
Records come back as upstream-named JSON dicts (preserving_proto_field_name).
"""
from __future__ import annotations

import json
import sys
import threading
import time


def main() -> None:
    gen_dir, target = sys.argv[1], sys.argv[2]
    sys.path.insert(0, gen_dir)
    import grpc
    from google.protobuf import json_format

    import upstream_xtcp_config_pb2 as cfg_pb
    import upstream_xtcp_config_pb2_grpc as cfg_grpc
    import upstream_xtcp_flat_record_pb2 as rec_pb
    import upstream_xtcp_flat_record_pb2_grpc as rec_grpc

    def to_dict(msg) -> dict:
        return json_format.MessageToDict(msg, preserving_proto_field_name=True)

    def err(e: grpc.RpcError) -> dict:
        return {"ok": False, "code": e.code().name, "details": e.details(),
                "trailing": dict(e.trailing_metadata() or ())}

    channel = grpc.insecure_channel(target)
    config = cfg_grpc.ConfigServiceStub(channel)
    records = rec_grpc.XTCPFlatRecordServiceStub(channel)
    ops = json.load(sys.stdin)
    results = []
    for op in ops:
        kind = op[0]
        try:
            if kind == "unary":
                method, body = op[1], op[2]
                req_cls = getattr(cfg_pb, f"{method}Request")
                req = json_format.ParseDict(body, req_cls(), ignore_unknown_fields=False)
                resp = getattr(config, method)(req, timeout=10)
                results.append({"ok": True, "response": to_dict(resp)})
            elif kind == "stream":
                p = op[1]
                call = records.FlatRecords(rec_pb.FlatRecordsRequest(), timeout=p["timeout"])
                got = []
                for r in call:
                    got.append(to_dict(r.xtcp_flat_record))
                    if len(got) >= p["count"]:
                        break
                call.cancel()
                results.append({"ok": True, "records": got})
            elif kind == "poll":
                p = op[1]
                def reqs():
                    for _ in range(p["requests"]):
                        yield rec_pb.PollFlatRecordsRequest()
                    time.sleep(p["timeout"])  # keep the request side open while records flow
                call = records.PollFlatRecords(reqs(), timeout=p["timeout"])
                got = []
                t0 = time.monotonic()
                for r in call:
                    got.append(to_dict(r.xtcp_flat_record))
                    if len(got) >= p["count"]:
                        break
                call.cancel()
                results.append({"ok": True, "records": got, "seconds": time.monotonic() - t0})
            elif kind == "clients":
                results.append({"ok": True, **_clients(grpc, rec_pb, rec_grpc, target, op[1])})
            else:
                results.append({"ok": False, "code": "BAD_OP", "details": kind})
        except grpc.RpcError as e:
            results.append(err(e))
    json.dump(results, sys.stdout)
    channel.close()


def _clients(grpc, rec_pb, rec_grpc, target: str, p: dict) -> dict:
    """R reading clients and S clients that open the stream and never read, for T seconds."""
    counts = [0] * p["readers"]
    first_last: list[list[float]] = [[0.0, 0.0] for _ in range(p["readers"])]
    stop = threading.Event()
    channels = []

    def reader(i: int) -> None:
        ch = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        channels.append(ch)
        call = rec_grpc.XTCPFlatRecordServiceStub(ch).FlatRecords(rec_pb.FlatRecordsRequest())
        threading.Thread(target=lambda: (stop.wait(), call.cancel()), daemon=True).start()
        try:
            for _ in call:
                now = time.monotonic()
                if not counts[i]:
                    first_last[i][0] = now
                first_last[i][1] = now
                counts[i] += 1
        except grpc.RpcError:
            pass

    stalled_calls = []
    for _ in range(p["stalled"]):
        # Its own connection, so its full flow-control window cannot hold back the readers;
        # without BDP probing the window stays at its initial size instead of growing.
        ch = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1),
                                                    ("grpc.http2.bdp_probe", 0)])
        channels.append(ch)
        call = rec_grpc.XTCPFlatRecordServiceStub(ch).FlatRecords(rec_pb.FlatRecordsRequest())
        stalled_calls.append(call)  # never iterated
    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(p["readers"])]
    for t in threads:
        t.start()
    print("clients-ready", file=sys.stderr, flush=True)
    time.sleep(p["seconds"])
    stop.set()
    for c in stalled_calls:
        c.cancel()
    for t in threads:
        t.join(timeout=10)
    for ch in channels:
        ch.close()
    return {"counts": counts, "first_last": first_last}


if __name__ == "__main__":
    main()
