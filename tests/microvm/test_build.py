"""Guest assembly pieces of xtcp2-microvm: initramfs writer, module dependencies, flags."""
import os
import shutil
import subprocess
import sys

import pytest

from xtcp2.tools import microvm as m


def test_cpio_is_readable_by_busybox(tmp_path):
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.skip("busybox not installed (scripts/apt-test.txt installs busybox-static)")
    c = m.Cpio()
    c.dir("bin")
    c.file("bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
    c.file("data", b"x" * 1001)           # length not a multiple of 4: padding must be right
    c.symlink("bin/sh", "tool")
    archive = c.finish()
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run([busybox, "cpio", "-id"], input=archive, cwd=out, check=True, capture_output=True)
    assert (out / "bin" / "tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.stat(out / "bin" / "tool").st_mode & 0o777 == 0o755
    assert (out / "data").read_bytes() == b"x" * 1001
    assert os.readlink(out / "bin" / "sh") == "tool"


def _fake_ko(path, depends):
    # The kernel keeps module metadata as NUL-separated key=value strings in .modinfo.
    path.write_bytes(b"\x7fELF junk\0license=GPL\0depends=" + depends.encode() + b"\0vermagic=6.1.0\0")
    return str(path)


def test_module_load_order_follows_depends(tmp_path):
    k = m.Kernel("6.1.0-test", "vmlinuz", {
        "a": _fake_ko(tmp_path / "a.ko", "b,c"),
        "b": _fake_ko(tmp_path / "b.ko", "c"),
        "c": _fake_ko(tmp_path / "c.ko", ""),
        "d": _fake_ko(tmp_path / "d.ko", "missing"),
        "x": _fake_ko(tmp_path / "x.ko", "y"),
        "y": _fake_ko(tmp_path / "y.ko", "x"),
    })
    assert m.module_load_order(k, ["a"]) == ["c", "b", "a"]
    with pytest.raises(m.MicroVMError, match="no module missing"):
        m.module_load_order(k, ["d"])
    with pytest.raises(m.MicroVMError, match="cycle"):
        m.module_load_order(k, ["x"])


def test_qemu_command_shares_root_read_only():
    k = m.Kernel("6.1.0-test", "/k/vmlinuz", {})
    cmd = m.qemu_command(k, "/k/initrd.gz", "tcg", 1024, 2, True)
    virtfs = cmd[cmd.index("-virtfs") + 1]
    assert "path=/," in virtfs and "readonly=on" in virtfs and f"mount_tag={m.MOUNT_TAG}" in virtfs
    assert cmd.count("-virtfs") == 1
    assert cmd[cmd.index("-cpu") + 1] == "max"
    assert cmd[cmd.index("-accel") + 1].startswith("tcg")


@pytest.mark.parametrize("args,msg", [
    (["nosuch"], "invalid choice"),
    (["lifecycle", "-mem", "10"], "-mem"),
    (["guest"], "guest needs a flavor"),
    (["tcp-stress", "-namespaces", "5000"], "-namespaces"),
    (["soak", "-duration", "forever"], "invalid duration"),
    (["lifecycle-coverage", "-coverDir", "/"], "-coverDir"),
    (["lifecycle-coverage", "-coverDir", "/tmp/a,b"], "-coverDir"),
    (["clickhouse-pipeline", "-mem", "-1"], "-mem"),
])
def test_bad_arguments(args, msg):
    r = subprocess.run([sys.executable, "-m", "xtcp2.tools.microvm", *args], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_only_the_coverage_directory_is_shared_writable():
    k = m.Kernel("6.1.0-test", "/k/vmlinuz", {})
    cmd = m.qemu_command(k, "/k/initrd.gz", "tcg", 1024, 2, True, writable_shares=[("/tmp/cov", m.COVER_TAG)])
    shares = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-virtfs"]
    assert len(shares) == 2 and "readonly=on" in shares[0]
    assert shares[1].startswith("local,path=/tmp/cov,") and f"mount_tag={m.COVER_TAG}" in shares[1]
    assert "readonly" not in shares[1]
    with pytest.raises(m.MicroVMError, match="comma"):
        m.qemu_command(k, "/k/initrd.gz", "tcg", 1024, 2, True, writable_shares=[("/tmp/a,b", "x")])
    line = m.share_mount("/tmp/cov", m.COVER_TAG)
    assert line.startswith(f"mkdir -p $R/tmp/cov && mount -t 9p -o trans=virtio") and "ro," not in line


def test_flavor_memory_defaults():
    assert set(m.FLAVOR_MEM) == set(m.FLAVORS) == set(m.RESULT_SENTINEL) == set(m.FINAL_SENTINEL)
    assert m.FLAVOR_MEM["clickhouse-pipeline"] >= 2048  # chdb's 530 MiB library plus ClickHouse
    assert m.build_parser().parse_args(["clickhouse-pipeline"]).mem == 0  # 0: the flavor's
