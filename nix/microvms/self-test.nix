# Per-flavor test driver inside the microVM: a oneshot after xtcp2.service that prints
# its sentinels on the serial console (the host runner greps them), then powers off.
{ flavorName, flavor }:
{ config, lib, pkgs, ... }:

let
  pkg = config.services.xtcp2.package;
  bin = name: "${pkg}/bin/${name}";
  script = {
    lifecycle = ''
      ${bin "xtcp2-selftest"} -unit xtcp2 -wait 30s
    '';
    soak = ''
      ${bin "tcp_server"} -count ${toString flavor.tcpCount} -quiet &
      sleep 2
      ${bin "tcp_client"} -count ${toString flavor.tcpCount} -sleep ${flavor.tcpSleep} -pads ${toString flavor.tcpPads} -quiet &
      ${bin "nsTest"} -initial ${toString flavor.nsTestInitial} -sleep ${flavor.nsTestSleep} -duration "$XTCP2_DURATION" -events \
        | grep -c -E '^(add|del) ' > /run/xtcp2/churn-events || true
      restarts=$(systemctl show -p NRestarts --value xtcp2)
      panics=$(journalctl -u xtcp2 -o cat | grep -c '^Traceback' || true)
      echo "XTCP2_SOAK_SUMMARY panics=$panics restarts=$restarts churn_events=$(cat /run/xtcp2/churn-events)"
      [ "$panics" = 0 ] && [ "$restarts" = 0 ] && echo XTCP2_SOAK_PASS || echo XTCP2_SOAK_FAIL
    '';
    # The stress driver starts and watches its own daemon (same flags) to read its RSS and log.
    tcp-stress = ''
      systemctl stop xtcp2.service
      ${pkg}/bin/xtcp2-microvm guest tcp-stress -namespaces ${toString flavor.namespaces} \
        -sockets ${toString flavor.socketsPerNamespace} -duration "$XTCP2_DURATION"
    '';
    # Both drive their own daemon (drivesOwnDaemon: no xtcp2.service), with the broker
    # or coverage around it.
    clickhouse-pipeline = ''
      ${pkg}/bin/xtcp2-microvm guest clickhouse-pipeline -duration "$XTCP2_DURATION"
    '';
    lifecycle-coverage = ''
      ${pkg}/bin/xtcp2-microvm guest lifecycle-coverage -coverDir ${flavor.coverDir}
    '';
  }.${flavorName};
in
{
  systemd.services.xtcp2-flavor-test = {
    description = "xtcp2 microVM ${flavorName} checks";
    after = lib.optionals config.services.xtcp2.enable [ "xtcp2.service" ]
      ++ lib.optional (flavorName == "tcp-stress") "docker.service";
    requires = lib.optionals config.services.xtcp2.enable [ "xtcp2.service" ];
    wantedBy = [ "multi-user.target" ];
    # tansu for clickhouse-pipeline (the guest driver looks on PATH); tcp-stress: the
    # docker CLI and a static busybox (the containers' whole image)
    path = [ pkgs.iproute2 pkgs.util-linux pkgs.gnugrep pkgs.coreutils pkgs.systemd ]
      ++ map (n: pkgs.${n}) (flavor.packages or [ ])
      ++ lib.optionals (flavorName == "tcp-stress") [ pkgs.docker pkgs.pkgsStatic.busybox ];
    environment.XTCP2_DURATION = "60s";
    serviceConfig = {
      Type = "oneshot";
      StandardOutput = "journal+console";
      StandardError = "journal+console";
      ExecStopPost = "${pkgs.systemd}/bin/systemctl poweroff --no-block";
    };
    script = script;
  };
}
