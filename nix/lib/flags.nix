# Render an attrset of daemon flags as an argv list, Go style: { dest = "null"; } -> [ "-dest" "null" ].
# Uses builtins only, so it evaluates without nixpkgs (checked offline by the tests).
let
  render = v:
    if builtins.isBool v then (if v then "true" else "false")
    else toString v;
  keep = flags: builtins.filter (n: flags.${n} != null) (builtins.attrNames flags);
in
{
  inherit render;
  toArgs = flags: builtins.concatLists (map (n: [ "-${n}" (render flags.${n}) ]) (keep flags));
}
