# The microVM flavors, one table for nix/microvms/mkVm.nix and for `xtcp2-microvm`
# (tests/tools/test_nix.py checks both agree). Pure data: evaluates without nixpkgs.
{
  lifecycle = {
    mem = 1024;
    description = "xtcp2 + the 10-check self-test";
    sentinel = "XTCP2_SELF_TEST_OVERALL";
    daemonFlags = { frequency = "1s"; timeout = "1s"; dest = "null"; };
  };
  soak = {
    mem = 1024;
    description = "nsTest churn + tcp_server/tcp_client population for --duration, then panics/restarts/RSS";
    sentinel = "XTCP2_SOAK";
    daemonFlags = { frequency = "1s"; timeout = "1s"; dest = "null"; };
    nsTestInitial = 50;
    nsTestSleep = "250ms";
    tcpCount = 100;
    tcpSleep = "5s";
    tcpPads = 2048;
  };
  tcp-stress = {
    mem = 3072;
    description = "many docker-style namespaces, each with tcp_server/tcp_client; every one must be discovered";
    sentinel = "XTCP2_TCP_STRESS";
    daemonFlags = { frequency = "1s"; timeout = "1s"; dest = "null"; };
    namespaces = 20;
    socketsPerNamespace = 100;
    tcpPads = 1024;
  };
  # Upstream runs Redpanda and clickhouse-server in docker; neither installs on the Debian
  # runner's host, so the guest runs Tansu and xtcp2_kafka_to_clickhouse into chdb.
  # The bridge's monitor prints XTCP2_CLICKPIPE_ROWS lines; rows must grow, and after
  # the daemon stops the table must hold exactly the records Kafka acknowledged.
  # The NixOS VM needs a chdb python package, which nixpkgs does not have (pythonDeps).
  clickhouse-pipeline = {
    mem = 3072;
    description = "xtcp2 -> Tansu (Kafka) -> xtcp2_kafka_to_clickhouse -> chdb; XTCP2_CLICKPIPE_ROWS rows grow and reconcile";
    sentinel = "XTCP2_CLICKPIPE";
    daemonFlags = { frequency = "1s"; timeout = "1s"; dest = "kafka:127.0.0.1:9092?topic=xtcp"; };
    packages = [ "tansu" ];
    pythonDeps = [ "chdb" ];
    drivesOwnDaemon = true; # the broker must be up first: no xtcp2.service
  };
  # The daemon and the in-process self-test measured by coverage.py; the data files land
  # in coverDir (a writable share) and the host merges them: `xtcp2-microvm` does it
  # itself, after a NixOS VM run `python -m xtcp2.tools.microvm_coverage <coverDir>`.
  lifecycle-coverage = {
    mem = 1024;
    description = "the lifecycle self-test under coverage.py; the host merges the data files and writes the report";
    sentinel = "XTCP2_LIFECYCLE_COVERAGE";
    daemonFlags = { frequency = "1s"; timeout = "1s"; dest = "null"; };
    coverDir = "/tmp/xtcp2cov";
    pythonDeps = [ "coverage" ];
    drivesOwnDaemon = true; # started under coverage by the driver: no xtcp2.service
  };
  collectors = {
    mem = 1024;
    description = "tests/ebpf/test_iter.py in the guest: the BPF iterator against inet_diag, field by field";
    sentinel = "XTCP2_MICROVM_ITER_COMPARE";
    daemonFlags = { frequency = "1s"; timeout = "1s"; dest = "null"; };
    pythonDeps = [ "pytest" ];
    drivesOwnDaemon = true; # no daemon: the two collectors read one namespace
  };
}
