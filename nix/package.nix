# xtcp2 as a Python application, with the CO-RE BPF object built by clang.
# vmlinux.h comes from the BTF of nixpkgs' kernel (the build sandbox has no /sys).
{ lib
, python3Packages
, clang
, bpftools
, libbpf
, linuxPackages
}:

python3Packages.buildPythonApplication {
  pname = "xtcp2";
  version = "0.1.0";
  pyproject = true;

  src = lib.cleanSourceWith {
    src = ../.;
    filter = path: type:
      let base = baseNameOf path; in
      !(lib.hasSuffix ".bpf.o" base || base == "vmlinux.h" || base == ".venv" || base == "result");
  };

  build-system = with python3Packages; [ setuptools wheel ];
  nativeBuildInputs = [ clang bpftools ];
  buildInputs = [ libbpf ];

  dependencies = with python3Packages; [
    protobuf
    numpy
    msgpack
    prometheus-client
    psutil
    grpcio
    grpcio-health-checking
    grpcio-reflection
    pyyaml
    bcrypt
    pyroute2
    confluent-kafka
    nats-py
    redis
    pyarrow
    boto3
  ];

  # BPF first: setuptools' package-data picks up xtcp2/ebpf/*.bpf.o.
  preBuild = ''
    make -C bpf CLANG=${clang}/bin/clang BPFTOOL=${bpftools}/bin/bpftool \
      VMLINUX_BTF=${linuxPackages.kernel.dev}/vmlinux \
      CFLAGS="-g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Wno-unused-function -I${libbpf}/include"
    cp bpf/*.bpf.o xtcp2/ebpf/
  '';

  # libbpf is loaded through ctypes at run time.
  makeWrapperArgs = [ "--prefix LD_LIBRARY_PATH : ${lib.makeLibraryPath [ libbpf ]}" ];

  # The test suite needs root, namespaces and real servers: run by CI, not the sandbox.
  doCheck = false;
  pythonImportsCheck = [ "xtcp2" "xtcp2.tools.selftest" ];

  meta = {
    description = "Per-socket TCP telemetry for every network namespace (Python port of randomizedcoder/xtcp2)";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "xtcp2";
  };
}
