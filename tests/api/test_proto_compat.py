"""Our xtcp_config.v1 / xtcp_flat_record.v1 services and messages match upstream's on the wire.

Compares protoc's descriptors of upstream's own files (tests/fixtures/upstream_proto)
with the descriptors of the modules xtcp2 ships: same package, services, methods with
the same request/response types and streaming, and for every upstream message every
field with the same number, type, label and message type.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2

from xtcp2.gen.xtcp_config.v1 import xtcp_config_pb2
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2

from . import upstream_proto


def _ours() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    out = {}
    for mod in (xtcp_config_pb2, xtcp_flat_record_pb2):
        fdp = descriptor_pb2.FileDescriptorProto()
        mod.DESCRIPTOR.CopyToProto(fdp)
        out[fdp.package] = fdp
    return out


def _upstream(tmp_path) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(upstream_proto.descriptor_set(tmp_path / "up.pb"))
    return {f.package: f for f in fds.file if f.package.startswith("xtcp_")}


def _messages(fdp, prefix=""):
    for m in fdp.message_type if hasattr(fdp, "message_type") else fdp.nested_type:
        name = f"{prefix}{m.name}"
        yield name, m
        yield from _messages_nested(m, name + ".")


def _messages_nested(m, prefix):
    for n in m.nested_type:
        yield f"{prefix}{n.name}", n
        yield from _messages_nested(n, f"{prefix}{n.name}.")


def test_same_services_and_methods(tmp_path):
    ours, up = _ours(), _upstream(tmp_path)
    assert set(up) == {"xtcp_config.v1", "xtcp_flat_record.v1"}
    for pkg, ufile in up.items():
        ofile = ours[pkg]
        usvc = {s.name: s for s in ufile.service}
        osvc = {s.name: s for s in ofile.service}
        assert set(usvc) == set(osvc), pkg
        for name, s in usvc.items():
            um = {m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming) for m in s.method}
            om = {m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
                  for m in osvc[name].method}
            assert um == om, f"{pkg}.{name}"


def test_every_upstream_field_same_number_and_type(tmp_path):
    ours, up = _ours(), _upstream(tmp_path)
    checked = 0
    for pkg, ufile in up.items():
        omsgs = dict(_messages(ours[pkg]))
        for mname, umsg in _messages(ufile):
            assert mname in omsgs, f"{pkg}.{mname} missing"
            ofields = {f.name: f for f in omsgs[mname].field}
            for uf in umsg.field:
                of = ofields.get(uf.name)
                assert of is not None, f"{pkg}.{mname}.{uf.name} missing"
                assert (of.number, of.type, of.label, of.type_name) == \
                    (uf.number, uf.type, uf.label, uf.type_name), f"{pkg}.{mname}.{uf.name}"
                checked += 1
            # a field we add must not reuse a number upstream gives another name
            unums = {f.number: f.name for f in umsg.field}
            for of in omsgs[mname].field:
                assert unums.get(of.number, of.name) == of.name, f"{pkg}.{mname}.{of.name} number clash"
    assert checked > 200  # XtcpConfig alone has 66 fields; the flat record far more


def test_strip_leaves_no_custom_options():
    for name in upstream_proto.PROTOS:
        text = upstream_proto.strip_proto((upstream_proto.FIXTURES / name).read_text())
        assert "buf.validate" not in text and "google.api" not in text
        assert "rpc Set(SetRequest) returns (SetResponse)" in text or "xtcp_flat_record" in name
