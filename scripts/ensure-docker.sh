#!/usr/bin/env bash
# Make a Docker engine available: use the running one; else, as root, install Debian's
# docker.io and start dockerd; else say what to do. Prints nothing on stdout.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  cat >&2 <<MSG
No Docker engine is running and this user cannot start one.
Start Docker (e.g. 'sudo systemctl start docker') or add this user to the 'docker' group,
then run the command again.
MSG
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "installing Debian's docker.io ..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io) >&2
fi
echo "starting dockerd ..." >&2
nohup dockerd >/var/log/shuyu-dockerd.log 2>&1 &
for _ in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
echo "dockerd did not come up; see /var/log/shuyu-dockerd.log" >&2
exit 1
