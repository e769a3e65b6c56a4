# One shared microVM definition (microvm.nix style); flavors only pick memory, daemon
# flags and the test driver. Kernel cmdline, hypervisor and console are identical.
{ nixpkgs, microvm, xtcp2Module, xtcp2Package, system ? "x86_64-linux" }:
flavorName:

let
  flavors = import ../flavors.nix;
  flavor = flavors.${flavorName};
  # Flavors name extra nixpkgs packages and python modules; the package gets the latter.
  withDeps = pkgs: xtcp2Package.overridePythonAttrs (old: {
    dependencies = (old.dependencies or [ ]) ++ map (n: pkgs.python3Packages.${n}) (flavor.pythonDeps or [ ]);
  });
in
nixpkgs.lib.nixosSystem {
  inherit system;
  modules = [
    microvm.nixosModules.microvm
    xtcp2Module
    (import ./self-test.nix { inherit flavorName flavor; })
    ({ pkgs, lib, ... }: {
      networking.hostName = "xtcp2-${flavorName}";
      system.stateVersion = "24.11";
      users.users.root.password = "";

      microvm = {
        hypervisor = "qemu";
        mem = flavor.mem;
        vcpu = 2;
        interfaces = [ ];
        # The store is shared read-only from the host, like the Debian runner shares /.
        shares = [{
          tag = "ro-store";
          source = "/nix/store";
          mountPoint = "/nix/.ro-store";
          proto = "9p";
        }];
        qemu.serialConsole = true;
      } // lib.optionalAttrs (flavor ? coverDir) {
        # lifecycle-coverage: the one writable share, where the data files land for the host
        shares = [
          { tag = "ro-store"; source = "/nix/store"; mountPoint = "/nix/.ro-store"; proto = "9p"; }
          { tag = "xtcp2cov"; source = flavor.coverDir; mountPoint = flavor.coverDir; proto = "9p"; }
        ];
      };
      boot.kernelParams = [ "console=ttyS0" "panic=-1" ];
      boot.kernelModules = [ "inet_diag" "tcp_diag" "udp_diag" "veth" ];

      services.xtcp2 = {
        enable = !(flavor.drivesOwnDaemon or false);
        package = withDeps pkgs;
        flags = flavor.daemonFlags;
      };
      environment.systemPackages = [ (withDeps pkgs) pkgs.iproute2 ] ++ map (n: pkgs.${n}) (flavor.packages or [ ]);
      # tcp-stress runs its load in docker containers, as upstream's (the guest driver
      # falls back to docker-style namespaces when no dockerd answers on /run/docker.sock)
      virtualisation.docker.enable = flavorName == "tcp-stress";
    })
  ];
}
