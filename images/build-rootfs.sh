#!/usr/bin/env bash
# Offline build of the sandbox BASE root filesystem (no container registry needed):
#   debootstrap --variant=minbase bookworm  +  python3, python3-venv
#   + a venv at /opt/venv with the pinned wheels of requirements.txt
# and write it as one tar, ready for `docker import`.
#
#   build-rootfs.sh OUT_TAR WHEEL_DIR MIRROR_URL
#
# WHEEL_DIR already holds every wheel of requirements.txt (sandbox/image.py downloads them
# once with pip into a cache), so the chroot never needs the network. Needs root
# (debootstrap, chroot, mount). Every input of this script is part of the base image's
# content hash, so editing it rebuilds the base.
set -euo pipefail
out=$1
wheels=$2
mirror=$3
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" != 0 ]; then
  echo "the offline image build needs root (debootstrap, chroot)" >&2
  exit 1
fi
work=$(mktemp -d "$(dirname "$out")/rootfs.XXXXXX")
root=$work/rootfs
cleanup() {
  umount "$root/proc" 2>/dev/null || true
  umount "$root/opt/wheels" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "debootstrap bookworm (minbase) from $mirror ..." >&2
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }

mount -t proc proc "$root/proc"
mkdir -p "$root/opt/wheels"
mount --bind "$wheels" "$root/opt/wheels"
cp "$here/requirements.txt" "$root/opt/requirements.txt"

echo "installing the pinned wheels into /opt/venv ..." >&2
chroot "$root" /usr/bin/python3 -m venv /opt/venv
chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin /opt/venv/bin/pip install -q \
  --no-index --find-links /opt/wheels --no-cache-dir -r /opt/requirements.txt
# Nothing in the sandbox installs anything: drop pip and the packaging tools.
chroot "$root" /opt/venv/bin/python -c 'import duckdb, pyarrow, numpy, pandas, sklearn, skops, RestrictedPython'
rm -rf "$root"/opt/venv/lib/python3.11/site-packages/{pip,pip-*,setuptools,setuptools-*} \
  "$root"/opt/venv/bin/pip* "$root/opt/requirements.txt"
umount "$root/opt/wheels"
rmdir "$root/opt/wheels"
umount "$root/proc"

# Slim: caches, docs, apt lists (the image never runs apt).
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/* "$root"/tmp/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + 2>/dev/null || true

tar -C "$root" --numeric-owner -cf "$out.part" .
mv "$out.part" "$out"
echo "rootfs written to $out" >&2
