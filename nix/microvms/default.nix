# microvm-x86_64-<flavor> for every flavor in ../flavors.nix, all built by mkVm.nix.
{ nixpkgs, microvm, xtcp2Module, xtcp2Package, system ? "x86_64-linux" }:

let
  mkVm = import ./mkVm.nix { inherit nixpkgs microvm xtcp2Module xtcp2Package system; };
  names = builtins.attrNames (import ../flavors.nix);
in
builtins.listToAttrs (map (name: {
  name = "microvm-x86_64-${name}";
  value = mkVm name;
}) names)
