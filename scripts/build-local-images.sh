#!/usr/bin/env bash
# Build container images for testlane's `container` backend from Debian packages, for machines that
# cannot pull from public registries (like testlane's own CI machine). Needs root, debootstrap and
# podman (apt-get install -y podman runc debootstrap).
#
#   scripts/build-local-images.sh            builds localhost/testlane-postgres:15
#
# The image follows the official postgres image's conventions that testlane relies on: PGDATA under
# /var/lib/postgresql/data (a tmpfs at run time), POSTGRES_PASSWORD (scram-sha-256 on TCP; testlane sets
# a random one per run) and POSTGRES_HOST_AUTH_METHOD honoured, listening on 5432, `postgres` as the
# superuser.
set -euo pipefail
IMAGE="${IMAGE:-localhost/testlane-postgres:15}"
WORK="${WORK:-/var/tmp/testlane-image-build}"
ROOTFS="$WORK/rootfs"

if podman image exists "$IMAGE"; then
    echo "$IMAGE already exists"; exit 0
fi
rm -rf "$ROOTFS"
mkdir -p "$WORK"
debootstrap --variant=minbase bookworm "$ROOTFS" http://deb.debian.org/debian
chroot "$ROOTFS" /bin/sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 postgresql-contrib-15 && apt-get clean && rm -rf /var/lib/apt/lists/*'
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
tar -C "$ROOTFS" -c . | podman import \
    --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    --change 'EXPOSE 5432' - "$IMAGE"
echo "built $IMAGE"
