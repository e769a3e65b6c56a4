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
}
