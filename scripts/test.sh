#!/usr/bin/env bash
# The test command: installs the system tools the tests drive for real (when missing; needs
# root and apt), then runs the BuildKit conformance cases and every cargo test of the workspace.
# Run it as root from the repository: `sudo bash scripts/test.sh` (tests that need root or a tool
# skip with a message when they cannot run; under CI=true they fail instead).
set -euo pipefail
cd "$(dirname "$0")/.."

# Registry, busybox rootfs, OCI checkers, htpasswd, time, the tty tests' tmux, runc and crun-free
# OCI differential tests, reflink and full-disk filesystems, the RUN network's user-mode NAT, and
# a C compiler with static libc for the seccomp probes, newuidmap/newgidmap for rootless builds,
# qemu-user emulators registered in binfmt_misc (fix-binary flag) for foreign-platform RUN steps.
pkgs=(busybox-static docker-registry skopeo umoci apache2-utils time curl openssl tmux runc
      xfsprogs e2fsprogs slirp4netns gcc libc6-dev docker.io uidmap qemu-user-static binfmt-support
      iproute2 nftables)
# binfmt_misc must be mounted before qemu-user-static's install registers its handlers.
if [ "$(id -u)" = 0 ] && [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
    echo "note: cannot mount binfmt_misc: foreign-platform RUN tests will fail" >&2
fi
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: missing packages (install them as root for the full suite): ${missing[*]}" >&2
  fi
fi

# Handlers registered before binfmt_misc was mounted (or by an older install) are imported now.
if [ "$(id -u)" = 0 ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && command -v update-binfmts >/dev/null; then
  update-binfmts --enable >/dev/null 2>&1 || true
fi

# The non-root user of the rootless tests and checks (useradd -m: an /etc/subuid range).
bash scripts/rootless.sh setup
# The multi-platform base images (busybox:multi, busybox:arm64) of the platform tests.
bash "${KILN_SHARED:-../shared}/registry-up.sh" --multi >/dev/null

echo "== conformance (kiln vs BuildKit v0.24 on ../shared/conformance/cases)"
bash scripts/conformance.sh
echo "== examples/embed_run as root (a library user with no init hook builds RUN steps)"
embed_state=$(mktemp -d)
embed_id=$(cargo run -q --locked --example embed_run -- examples/embed_run "$embed_state")
rm -rf "$embed_state"
[[ $embed_id =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "embed_run printed no image id: $embed_id" >&2; exit 1; }
echo "embed_run: $embed_id"
echo "== rootless: the same cases and examples/embed_run as a non-root user"
bash scripts/rootless.sh run
echo "== tests"
cargo test --workspace --locked
