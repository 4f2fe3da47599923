#!/usr/bin/env bash
# Make a Docker engine available: use the running one; else, as root, install Debian's
# docker.io if needed and start dockerd in the background with a log; else say what to do.
# Prints nothing on stdout (callers capture it); progress and errors go to stderr.
set -euo pipefail
LOG=${SHUYU_DOCKERD_LOG:-/var/log/shuyu-dockerd.log}
WAIT_S=${SHUYU_DOCKERD_WAIT_S:-60}

engine_up() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_up; then exit 0; fi

if [ "$(id -u)" != 0 ]; then
  cat >&2 <<MSG
No Docker engine is running and this user ($(id -un)) is not root, so it cannot start one.
Do one of:
  - start Docker:            sudo systemctl start docker   (or: sudo bash $0)
  - or join the docker group: sudo usermod -aG docker $(id -un)   then log in again
Then run the command again.
MSG
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  echo "installing Debian's docker.io ..." >&2
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io) >&2; then
    echo "could not install docker.io with apt-get; install Docker by hand and retry" >&2
    exit 1
  fi
fi

# A dockerd that is already starting (pid file and live process): just wait for it.
if [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  echo "dockerd (pid $(cat /var/run/docker.pid)) is starting; waiting ..." >&2
else
  # Prefer the service manager when there is one; else run dockerd in the background.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    echo "starting docker with systemctl ..." >&2
    systemctl start docker >&2 || true
  fi
  if ! engine_up; then
    echo "starting dockerd in the background (log: $LOG) ..." >&2
    mkdir -p "$(dirname "$LOG")"
    nohup dockerd >>"$LOG" 2>&1 </dev/null &
    disown || true
  fi
fi

for _ in $(seq "$WAIT_S"); do
  if engine_up; then
    echo "docker engine is up" >&2
    exit 0
  fi
  sleep 1
done
echo "dockerd did not come up within ${WAIT_S}s; last lines of $LOG:" >&2
tail -n 20 "$LOG" >&2 2>/dev/null || true
exit 1
