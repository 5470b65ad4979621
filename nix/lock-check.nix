# Offline check that flake.lock matches the inputs flake.nix declares.
#
# `nix flake metadata --no-update-lock-file` does notice a mismatch, but only
# by trying to fetch the changed input, so without network it fails after a
# few seconds with a download error that does not say what is wrong. This
# compares the two files directly and names the input that differs.
# Plain Nix builtins only (no nixpkgs), so it runs with any Nix, offline:
#
#   nix-instantiate --eval --strict nix/lock-check.nix
#
# It evaluates to the list of checked input names or fails with a message.
let
  flake = import ../flake.nix;
  lock = builtins.fromJSON (builtins.readFile ../flake.lock);

  rootNode = lock.nodes.${lock.root};
  declared = builtins.attrNames flake.inputs;
  locked = builtins.attrNames (rootNode.inputs or { });

  # `github:OWNER/REPO` or `github:OWNER/REPO/REF`, the only form used here,
  # as the `original` attribute set Nix writes into the lock.
  parseGithubUrl =
    name: url:
    let
      parts = builtins.match "github:([^/]+)/([^/?]+)(/([^?]+))?" url;
    in
    if parts == null then
      throw "input ${name}: cannot check url ${url}; only github:OWNER/REPO[/REF] is supported"
    else
      {
        type = "github";
        owner = builtins.elemAt parts 0;
        repo = builtins.elemAt parts 1;
      }
      // (if builtins.elemAt parts 3 == null then { } else { ref = builtins.elemAt parts 3; });

  checkInput =
    name:
    let
      input = flake.inputs.${name};
      nodeName = rootNode.inputs.${name};
      node = lock.nodes.${nodeName};
      expected = parseGithubUrl name input.url;
      extraAttrs = builtins.removeAttrs input [ "url" ];
    in
    if extraAttrs != { } then
      throw "input ${name}: only `url` is checked, but it also sets ${toString (builtins.attrNames extraAttrs)}"
    else if !(builtins.isString nodeName) then
      throw "input ${name}: flake.lock makes it follow another input"
    else if node.original != expected then
      throw "input ${name}: flake.nix wants ${builtins.toJSON expected}, flake.lock has ${builtins.toJSON node.original}; run `nix flake lock`"
    else if !(node.locked ? rev && node.locked ? narHash) then
      throw "input ${name}: flake.lock entry is not pinned to a revision and hash"
    else
      name;
in
if declared != locked then
  throw "flake.nix declares inputs ${builtins.toJSON declared}, flake.lock locks ${builtins.toJSON locked}; run `nix flake lock`"
else
  map checkInput declared
