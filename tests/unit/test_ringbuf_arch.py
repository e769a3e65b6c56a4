"""The ring buffer reader runs only where plain loads and stores are ordered (x86)."""
from __future__ import annotations

import pytest

from xtcp2.ebpf.ringbuf import check_arch
from xtcp2.errors import Xtcp2Error


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "ppc64le", "riscv64"])
def test_weakly_ordered_cpus_are_refused_with_one_line(machine):
    with pytest.raises(Xtcp2Error) as e:
        check_arch(machine)
    msg = str(e.value)
    assert machine in msg and "--mode poll" in msg and "\n" not in msg


@pytest.mark.parametrize("machine", ["x86_64", "i686"])
def test_x86_is_accepted(machine):
    check_arch(machine)
