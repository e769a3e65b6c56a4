# NixOS module: services.xtcp2 — the daemon as a hardened systemd unit.
# One option per daemon flag (names and defaults from ../lib/defaults.nix), rendered
# Go style by ../lib/flags.nix, so the unit's command line is exactly `xtcp2 -flag value ...`.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.xtcp2;
  defaults = import ../lib/defaults.nix;
  flags = import ../lib/flags.nix;

  typeOf = v:
    if builtins.isBool v then lib.types.bool
    else if builtins.isInt v then lib.types.int
    else lib.types.str;

  flagOptions = lib.mapAttrs (name: default: lib.mkOption {
    type = lib.types.nullOr (typeOf default);
    inherit default;
    description = "xtcp2 -${name} (null leaves it out of the command line).";
  }) defaults;
in
{
  options.services.xtcp2 = {
    enable = lib.mkEnableOption "xtcp2 per-socket TCP telemetry collector";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.xtcp2 or (pkgs.callPackage ../package.nix { });
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The xtcp2 package.";
    };

    flags = lib.mkOption {
      type = lib.types.submodule { options = flagOptions; };
      default = { };
      description = "Daemon flags; see `xtcp2 -help`.";
    };

    mode = lib.mkOption {
      type = lib.types.enum [ "poll" "bpf" "auto" ];
      default = "poll";
      description = "Collection mode: timer-driven polling, BPF events, or BPF when the kernel allows.";
    };

    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "Further arguments appended to the command line.";
    };

    tasksMax = lib.mkOption {
      type = lib.types.int;
      default = 8192;
      description = "systemd TasksMax (upstream's 12 h soak hit the default ceiling).";
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.xtcp2 = {
      description = "xtcp2 per-socket TCP telemetry";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      # -enrichLldp asks lldpd through lldpcli; its socket is _lldpd-group only (NixOS has no setuid lldpcli)
      path = lib.optional (cfg.flags.enrichLldp == true) pkgs.lldpd;
      serviceConfig = {
        ExecStart = lib.escapeShellArgs ([ (lib.getExe cfg.package) "--mode" cfg.mode ]
          ++ flags.toArgs cfg.flags ++ cfg.extraArgs);
        Restart = "on-failure";
        RestartSec = 2;
        TasksMax = cfg.tasksMax;
        LimitNOFILE = 65536;

        # Entering other namespaces (setns) needs CAP_SYS_ADMIN; reading /proc/PID/ns/net
        # of other users' processes needs CAP_SYS_PTRACE; sock_diag detail and nsid need
        # CAP_NET_ADMIN; bpf mode needs CAP_BPF + CAP_PERFMON. Nothing else is granted.
        CapabilityBoundingSet = [ "CAP_SYS_ADMIN" "CAP_SYS_PTRACE" "CAP_NET_ADMIN" "CAP_NET_RAW"
                                  "CAP_BPF" "CAP_PERFMON" "CAP_SYS_RESOURCE" ];
        AmbientCapabilities = [ "CAP_SYS_ADMIN" "CAP_SYS_PTRACE" "CAP_NET_ADMIN" "CAP_NET_RAW"
                                "CAP_BPF" "CAP_PERFMON" "CAP_SYS_RESOURCE" ];
        NoNewPrivileges = true;
        SupplementaryGroups = lib.optional (cfg.flags.enrichLldp == true) "_lldpd";

        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectControlGroups = true;
        ProtectKernelTunables = false;  # bpf mode reads /sys/kernel/btf and tracefs
        # setns() into network namespaces is what the daemon does; everything else is refused.
        RestrictNamespaces = [ "net" ];
        RestrictAddressFamilies = [ "AF_NETLINK" "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "@mount" "setns" "bpf" "perf_event_open" ];
        UMask = "0077";
        RuntimeDirectory = "xtcp2";
        StateDirectory = "xtcp2";
      };
    };
  };
}
