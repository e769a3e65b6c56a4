{
  description = "xtcp2: per-socket TCP telemetry for every network namespace (Python)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";
    microvm = {
      url = "github:astro/microvm.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, microvm }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      xtcp2 = pkgs.callPackage ./nix/package.nix { };
      vms = import ./nix/microvms/default.nix {
        inherit nixpkgs microvm system;
        xtcp2Module = self.nixosModules.xtcp2;
        xtcp2Package = xtcp2;
      };
    in
    {
      packages.${system} = {
        default = xtcp2;
        inherit xtcp2;
      } // builtins.mapAttrs (_: vm: vm.config.microvm.declaredRunner) vms;

      nixosModules.xtcp2 = import ./nix/modules/xtcp2-service.nix;
      nixosModules.default = self.nixosModules.xtcp2;

      nixosConfigurations = vms;

      apps.${system} = builtins.mapAttrs (name: vm: {
        type = "app";
        program = "${vm.config.microvm.declaredRunner}/bin/microvm-run";
      }) vms;

      # Pure data the Debian runner (xtcp2-microvm) shares with the microvm definitions.
      lib.flavors = import ./nix/flavors.nix;

      checks.${system} = {
        package = xtcp2;
        lifecycle-vm = vms.microvm-x86_64-lifecycle.config.microvm.declaredRunner;
      };
    };
}
