#!/bin/sh
# Start a local Docker engine for the docker tests and benchmarks (run as root; idempotent).
#
# - installs Debian's docker.io and busybox-static with apt-get when they are missing
#   (the only network this needs);
# - starts dockerd in the background without networking (--bridge=none, no iptables), trying
#   the overlay2 storage driver first and vfs where overlay2 does not work;
# - waits until `docker info` answers;
# - imports resguard-busybox:latest from a tarball built from busybox-static's /bin/busybox,
#   so no registry is needed.
# Environment: RESGUARD_DOCKERD_LOG (default /var/log/resguard-dockerd.log),
#              RESGUARD_DOCKERD_WAIT_S (default 60),
#              RESGUARD_DOCKER_STORAGE_DRIVERS (default "overlay2 vfs", tried in order).
set -eu

LOG=${RESGUARD_DOCKERD_LOG:-/var/log/resguard-dockerd.log}
WAIT_S=${RESGUARD_DOCKERD_WAIT_S:-60}
DRIVERS=${RESGUARD_DOCKER_STORAGE_DRIVERS:-overlay2 vfs}
IMAGE=resguard-busybox:latest
PIDFILE=/var/run/resguard-dockerd.pid

say() { echo "docker-up: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "must run as root"
    exit 1
fi

engine_up() { docker info >/dev/null 2>&1; }

install_packages() {
    missing=""
    command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
    dpkg -s busybox-static >/dev/null 2>&1 || missing="$missing busybox-static"
    [ -z "$missing" ] && return 0
    say "installing$missing"
    # Do not let the package's init script start a daemon with default networking.
    created_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
    return 0
}

start_engine() {
    driver=$1
    say "starting dockerd (storage driver $driver, log $LOG)"
    # A previous failed try may leave a daemon that never answered; stop only ours.
    stop_ours
    # --ip6tables only exists on newer engines; add it when this dockerd knows it.
    extra=""
    if dockerd --help 2>/dev/null | grep -q -- '--ip6tables'; then
        extra="--ip6tables=false"
    fi
    # shellcheck disable=SC2086
    nohup dockerd --bridge=none --iptables=false --ip-masq=false $extra \
        --storage-driver="$driver" --log-level=warn >>"$LOG" 2>&1 &
    echo $! > "$PIDFILE"
    waited=0
    while [ "$waited" -lt "$WAIT_S" ]; do
        if engine_up; then
            return 0
        fi
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            say "dockerd exited (driver $driver); last log lines:"
            tail -n 5 "$LOG" >&2 || true
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "dockerd did not answer within ${WAIT_S}s (driver $driver)"
    return 1
}

stop_ours() {
    if [ -f "$PIDFILE" ]; then
        pid=$(cat "$PIDFILE")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            i=0
            while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 30 ]; do sleep 1; i=$((i + 1)); done
        fi
        rm -f "$PIDFILE"
    fi
}

storage_works() {
    # overlay2 can start yet fail on the first container (e.g. overlay on overlay); try one.
    docker run --rm --network none "$IMAGE" true >/dev/null 2>&1
}

import_image() {
    docker image inspect "$IMAGE" >/dev/null 2>&1 && return 0
    say "importing $IMAGE from /bin/busybox"
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/tmp" "$root/etc"
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
    echo 'root:x:0:' > "$root/etc/group"
    tar -C "$root" -cf - . | docker import \
        --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
    rm -rf "$root"
    trap - EXIT
}

install_packages
if ! /bin/busybox --list >/dev/null 2>&1; then
    say "/bin/busybox is missing or not runnable"
    exit 1
fi

if engine_up; then
    say "engine already running"
else
    started=""
    for driver in $DRIVERS; do
        if start_engine "$driver"; then
            import_image
            if storage_works; then
                started=$driver
                break
            fi
            say "containers do not start with storage driver $driver"
        fi
    done
    if [ -z "$started" ]; then
        stop_ours
        say "could not start a working Docker engine; see $LOG"
        exit 1
    fi
    say "engine running with storage driver $started"
fi
import_image
docker info --format 'docker-up: server {{.ServerVersion}}, cgroup v{{.CgroupVersion}} driver {{.CgroupDriver}}, storage {{.Driver}}' >&2
