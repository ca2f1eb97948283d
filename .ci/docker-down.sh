#!/bin/sh
# Stop the Docker engine that .ci/docker-up.sh started and remove leftover test containers
# (labels resguard-test=1 and resguard-bench=1). Run as root; idempotent: safe to run when
# nothing is running. An engine this script did not start is left running unless
# RESGUARD_DOCKER_STOP_ANY=1 (then the daemon in /var/run/docker.pid is stopped too).
set -eu

PIDFILE=/var/run/resguard-dockerd.pid
WAIT_S=${RESGUARD_DOCKERD_WAIT_S:-60}

say() { echo "docker-down: $*" >&2; }

if docker info >/dev/null 2>&1; then
    for label in resguard-test=1 resguard-bench=1; do
        ids=$(docker ps -aq --filter "label=$label")
        if [ -n "$ids" ]; then
            say "removing leftover containers ($label): $(echo "$ids" | wc -l)"
            # shellcheck disable=SC2086  # one id per word
            docker rm -f $ids >/dev/null 2>&1 || true
        fi
    done
fi

stop_pid() {
    pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    say "stopping dockerd (pid $pid)"
    kill "$pid" 2>/dev/null || true
    waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge "$WAIT_S" ]; then
            say "dockerd did not stop in ${WAIT_S}s; sending SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

if [ -f "$PIDFILE" ]; then
    stop_pid "$(cat "$PIDFILE")"
    rm -f "$PIDFILE"
elif [ "${RESGUARD_DOCKER_STOP_ANY:-0}" = 1 ] && [ -f /var/run/docker.pid ]; then
    stop_pid "$(cat /var/run/docker.pid)"
else
    say "no engine started by docker-up.sh is running"
fi
