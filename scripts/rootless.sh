#!/usr/bin/env bash
# Rootless checks, run by scripts/test.sh as root: as an ordinary user (kiln-rootless, made by
# `scripts/rootless.sh setup`: `useradd -m` gives it an /etc/subuid and /etc/subgid range,
# newuidmap/newgidmap come from the uidmap package) and with its default state directory
# (~/.local/share/kiln of a scratch HOME), it runs the conformance cases of
# ../shared/conformance and examples/embed_run. The binaries are built as root and copied
# where the user can run them (a clone under /root is not readable by other users), with a copy
# of ../shared/conformance.
# usage: scripts/rootless.sh setup | run          env: KILN_ROOTLESS_USER (kiln-rootless)
set -euo pipefail
cd "$(dirname "$0")/.."
user=${KILN_ROOTLESS_USER:-kiln-rootless}
SHARED=$(cd "${KILN_SHARED:-../shared}" && pwd)

if [ "$(id -u)" != 0 ]; then
  echo "skipped: rootless checks need root (to create the user $user)"
  if [ -n "${CI:-}" ]; then exit 1; else exit 0; fi
fi

setup() {
  id "$user" >/dev/null 2>&1 || useradd -m "$user"
  grep -q "^$user:" /etc/subuid ||
    usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "$user"
  # Debian's udev rule makes /dev/net/tun 0666; containers often leave it 0600, which keeps an
  # ordinary user's slirp4netns (the RUN network of --network default) from opening it.
  if [ -c /dev/net/tun ]; then chmod 0666 /dev/net/tun; fi
}

run() {
  setup
  bash "$SHARED/registry-up.sh" >/dev/null
  cargo build --locked -q --bin kiln --example embed_run
  local target home
  target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  work=$(mktemp -d /tmp/kiln-rootless.XXXXXX) # global: the EXIT trap needs it
  # Root removes it all, files of the user's subordinate ids included.
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work"
  cp "$target/debug/kiln" "$target/debug/examples/embed_run" "$work/"
  cp -r examples/embed_run "$work/embed-context"
  # The shared checkout may sit under a directory the user cannot enter.
  cp -r "$SHARED/conformance" "$work/conformance"
  chmod -R a+rX "$work"
  home=$work/home
  mkdir "$home"
  chown "$user:" "$home"
  as_user() {
    runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" \
      CI="${CI:-}" "$@"
  }

  echo "== rootless conformance (as $user, state in ~/.local/share/kiln)"
  (cd "$work" && as_user env KILN="$work/kiln" \
    python3 "$work/conformance/run.py" --builder kiln "$work/conformance/cases")
  local driver
  driver=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["driver"], m.get("userxattr", False))' \
    "$home/.local/share/kiln/snapshots/metadata.json")
  echo "snapshot driver: $driver"
  [ "$driver" = "overlay True" ] || { echo "rootless builds did not use overlayfs with userxattr"; exit 1; }

  echo "== rootless examples/embed_run (built as root, run as $user)"
  local id
  id=$(cd "$work" && as_user "$work/embed_run" "$work/embed-context" "$home/embed-state")
  echo "$id"
  [[ $id =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "embed_run printed no image id"; exit 1; }
}

case ${1:-run} in
  setup) setup ;;
  run) run ;;
  *) echo "usage: $0 setup|run" >&2; exit 2 ;;
esac
