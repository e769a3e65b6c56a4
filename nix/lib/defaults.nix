# Daemon flags and their defaults, as `xtcp2 -help` prints them (Go-style names).
# Pure data: the NixOS module makes one option per entry, and tests/tools/test_nix.py
# evaluates this file offline and feeds the rendered flags to the real xtcp2 CLI parser.
{
  frequency = "10s";
  timeout = "5s";
  nltimeout = 1000;
  maxLoops = 0;
  netlinkers = 4;
  packetSize = 65536;
  modulus = 1;
  pollJitterPct = 0;
  reconcileFrequency = "6h";
  reconcileBeforePoll = true;
  populateNsid = true;
  resolveProcess = true;
  resolveContainerId = false;
  enrichContainer = false;
  dockerSocket = "/run/docker.sock";
  marshal = "protobufList";
  dest = "null";
  topic = "xtcp";
  envelopeFlushRows = 10000;
  envelopeFlushBytes = 786432;
  columns = "";
  deserializers = "default";
  promListen = "127.0.0.1:9088";
  promPath = "/metrics";
  grpcPort = 8889;
  metricsMaxNetns = 100;
  grpcAllowUid = "";
  grpcAllowGid = "";
  fileDestDir = "/var/lib/xtcp2";
  label = "";
  tag = "";
  location = "";
  enrichNic = false;
  enrichLldp = false;
  lldpdSocket = "/run/lldpd.socket";
  uplinkCount = 2;
  uplinkInterfaces = "";
}
