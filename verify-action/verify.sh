#!/usr/bin/env bash
# "Verify on release" for CI: install git-vaultmesh, fetch the ledger refs (CI checkouts never fetch them),
# verify the tag, optionally write a signed VSA. Run by verify-action/action.yml; inputs come as INPUT_*
# environment variables, so any CI can run it too (docs/interop.md).
set -euo pipefail

ref="${INPUT_REF:-}"
if [ -z "$ref" ]; then
  echo "::error::input 'ref' is required: the tag to verify" >&2
  exit 2
fi
remote="${INPUT_REMOTE:-origin}"

if [ "${INPUT_INSTALL:-true}" = "true" ]; then
  # default: the git-vaultmesh source this action was checked out with, so action and tool versions match
  python3 -m pip install --quiet "${INPUT_PACKAGE:-${GITHUB_ACTION_PATH:-$(dirname "$0")}/..}"
fi

cd "${GITHUB_WORKSPACE:-.}"

# a shallow checkout cannot be verified: the history Merkle root covers every commit under the tag
if [ "$(git rev-parse --is-shallow-repository)" = "true" ]; then
  git fetch --quiet --unshallow "$remote"
fi
# the ledger: the log, the keep refs that hold recorded commits alive, and the notes index.
# No '+': a log that does not fast-forward what this clone already has is refused, not overwritten.
if ! git fetch --quiet "$remote" \
    'refs/vaultmesh/log:refs/vaultmesh/log' \
    'refs/vaultmesh/keep/*:refs/vaultmesh/keep/*' \
    'refs/notes/vaultmesh:refs/notes/vaultmesh'; then
  echo "::error::could not fetch refs/vaultmesh/log and refs/notes/vaultmesh from $remote: push them with" \
       "git push $remote refs/vaultmesh/log 'refs/vaultmesh/keep/*' refs/notes/vaultmesh" >&2
  exit 1
fi
# tags: without force, a tag that differs from the one already here fails the fetch (a moved tag)
git fetch --quiet --tags "$remote"

args=(verify "$ref")
if [ -n "${INPUT_TRUST_ROOT:-}" ]; then
  args+=(--trust-root "$INPUT_TRUST_ROOT")
else
  echo "::warning::no trust-root given: verify trusts the ledger's genesis signer on first use" >&2
fi
while IFS= read -r artifact; do
  if [ -n "$artifact" ]; then args+=(--artifact "$artifact"); fi
done <<< "${INPUT_ARTIFACTS:-}"
if [ -n "${INPUT_VSA:-}" ]; then
  key="${INPUT_VSA_KEY:-}"
  case "$key" in
    -----BEGIN*)  # the PEM itself (a CI secret): into a private temporary file
      keyfile="$(mktemp)"; trap 'rm -f "$keyfile"' EXIT
      chmod 600 "$keyfile"; printf '%s\n' "$key" > "$keyfile"; key="$keyfile" ;;
  esac
  args+=(--vsa "$INPUT_VSA" --vsa-key "$key")
fi
git vaultmesh "${args[@]}"
