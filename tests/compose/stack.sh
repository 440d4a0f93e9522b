#!/usr/bin/env bash
# The compose stack with podman on a machine that cannot pull images (like the CI machines):
# make the Debian base image locally, build the thalassa image from a binary compiled on this
# host, bring the stack up with podman-compose and wait until it is healthy, tear it down.
# Every command can be rerun: `base-image` keeps a present image, `up` recreates the containers
# (the data stays in the volumes), `down` of a stack that is not up does nothing.
# `tests/compose_stack.rs` drives this script; README "Compose" explains it for people.
#
# Usage: tests/compose/stack.sh COMMAND...   (commands run in order, e.g. `base-image build up`)
#   base-image   make docker.io/library/debian:trixie-slim with debootstrap (skipped if present)
#   build        build $THALASSA_IMAGE (target `prebuilt` of the Containerfile) from
#                $THALASSA_BINARY, or from `cargo build --release` when that is unset
#   build-web    build the e2e test's tiny web server image (tests/compose/web.Containerfile)
#   up           podman-compose up -d, then wait until every container is healthy (or running,
#                for containers without a health check)
#   wait-healthy only the waiting part of `up`
#   down         remove the project's containers, network and volumes
#   ip SERVICE   print the address of a service's container on the project network
#   restart SERVICE  restart a service's container (then e.g. `wait-healthy`)
#   recreate SERVICE replace a service's container with a new one (what an image upgrade does)
#   kill SERVICE     kill a service's container (SIGKILL; its restart policy leaves it dead)
#   start SERVICE    start a service's killed or stopped container again
#   exec SERVICE COMMAND...  run a command in a service's container (takes the rest of the line)
#   ps | logs    show the project's containers / their logs
#
# Environment:
#   COMPOSE_PROJECT_NAME  project name (default: `name:` of the first compose file, i.e.
#                         thalassa for compose.yaml, thalassa-cluster for compose.cluster.yaml)
#   COMPOSE_FILE          compose files, colon separated (default: compose.yaml)
#   THALASSA_IMAGE        image tag shared with compose.yaml (default: thalassa:latest)
#   THALASSA_BINARY       a prebuilt thalassa binary for `build` (glibc <= Debian trixie's; a bookworm build runs)
#   THALASSA_UP_TIMEOUT   seconds `up`/`wait-healthy` waits for a healthy stack (default: 120)
#   THALASSA_UP_MAX_RESTARTS  restarts after which a container counts as crash-looping and
#                         `up`/`wait-healthy` give up at once (default: 3)
#   CONTAINERS_CONF       podman settings (default: tests/compose/containers.conf, which selects
#                         runc and ulimits that work on the CI machines)
#   THALASSA_HTTP_PORT, THALASSA_MYSQL_PORT, THALASSA_REGISTRY_PORT, THALASSA_AQUEDUCT_PORT
#                         host side of the published ports (see compose.yaml)
#   THALASSA_CLUSTER_*_PORT  the same for compose.cluster.yaml (see there)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
export THALASSA_IMAGE=${THALASSA_IMAGE:-thalassa:latest}
# The Containerfile's runtime stage starts FROM this exact name; a locally made image with this
# tag is found without a pull.
base_image=docker.io/library/debian:trixie-slim
web_image=localhost/thalassa-e2e-web:latest

log() { printf 'stack.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed ($2)"; }

# The project as the compose tool names it (COMPOSE_PROJECT_NAME, else the first compose file's
# `name:`): a stack.sh command on another file's stack never touches the default `thalassa`.
compose_file=${COMPOSE_FILE:-compose.yaml}
compose_file=${compose_file%%:*}
project=${COMPOSE_PROJECT_NAME:-$(awk '$1 == "name:" { print $2; exit }' "$compose_file" 2>/dev/null || true)}
[ -n "$project" ] || die "no COMPOSE_PROJECT_NAME, and no name: in $compose_file"
export COMPOSE_PROJECT_NAME=$project

# The Debian mirror this machine already uses; never a host name written into the repository.
apt_mirror() {
  local sources=/etc/apt/sources.list.d/debian.sources mirror=''
  if [ -r "$sources" ]; then
    mirror=$(awk '$1 == "URIs:" { print $2; exit }' "$sources")
  fi
  if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
  fi
  [ -n "$mirror" ] || die "no Debian mirror found in $sources or /etc/apt/sources.list"
  printf '%s\n' "$mirror"
}

cmd_base_image() {
  if podman image exists "$base_image"; then
    log "base image $base_image is present"
    return
  fi
  need debootstrap "apt-get install debootstrap"
  local mirror rootfs started=$SECONDS
  mirror=$(apt_mirror)
  rootfs=$(mktemp -d /tmp/thalassa-rootfs.XXXXXX)
  # shellcheck disable=SC2064 # expand now: the trap must remove this very directory
  trap "rm -rf '$rootfs'" EXIT
  log "debootstrap trixie from $mirror (about 30 s)"
  debootstrap --variant=minbase trixie "$rootfs" "$mirror" >"$rootfs.log" 2>&1 ||
    die "debootstrap failed, see $rootfs.log"
  rm -f "$rootfs.log"
  # Slim it like the official trixie-slim: no downloaded packages, package lists, docs (but the
  # copyright files), manuals or translations, and keep later apt installs free of them too.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/usr/share/groff/* "$rootfs"/usr/share/lintian/*
  find "$rootfs"/usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs"/usr/share/doc -mindepth 1 -type d -empty -delete
  cat >"$rootfs"/etc/dpkg/dpkg.cfg.d/slim <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  cat >"$rootfs"/etc/apt/apt.conf.d/docker-clean <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["bash"]' - "$base_image" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  log "base image $base_image made in $((SECONDS - started)) s"
}

cmd_build() {
  local binary=${THALASSA_BINARY:-} context started=$SECONDS
  if [ -z "$binary" ]; then
    need cargo "https://rustup.rs"
    log "cargo build --release"
    cargo build --release --locked --bin thalassa
    binary=${CARGO_TARGET_DIR:-$repo/target}/release/thalassa
  fi
  [ -x "$binary" ] || die "no thalassa binary at $binary"
  podman image exists "$base_image" || die "no base image $base_image: run '$0 base-image' first"
  # The build context is only the binary: nothing else of the repository goes into the image.
  # Its debug information stays out too (the release profile keeps line tables: 44 MB -> 9 MB);
  # the symbols stay, so a backtrace still names its functions.
  context=$(mktemp -d /tmp/thalassa-context.XXXXXX)
  if command -v strip >/dev/null 2>&1; then
    strip --strip-debug -o "$context/thalassa" "$binary"
  else
    cp "$binary" "$context/thalassa"
  fi
  podman build --quiet --target prebuilt --file "$repo/Containerfile" --tag "$THALASSA_IMAGE" \
    "$context" >/dev/null || {
    rm -rf "$context"
    die "podman build failed"
  }
  rm -rf "$context"
  log "image $THALASSA_IMAGE built in $((SECONDS - started)) s," \
    "$(podman image inspect --format '{{.Size}}' "$THALASSA_IMAGE") bytes"
}

cmd_build_web() {
  podman image exists "$base_image" || die "no base image $base_image: run '$0 base-image' first"
  podman build --quiet --file "$here/web.Containerfile" --tag "$web_image" "$here" >/dev/null
  log "web image $web_image built"
}

# Names of the project's containers, whatever naming scheme the compose tool uses.
project_containers() {
  podman ps --all --filter "label=io.podman.compose.project=$project" --format '{{.Names}}'
}

service_container() {
  podman ps --all --filter "label=io.podman.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | sed -n 1p
}

# podman 4.3 runs health checks from systemd timers, and there is no systemd on the CI
# machines: run each container's own check (the one compose.yaml defines) until it passes.
cmd_wait_healthy() {
  local timeout=${THALASSA_UP_TIMEOUT:-120} max_restarts=${THALASSA_UP_MAX_RESTARTS:-3}
  local deadline names name pending
  deadline=$((SECONDS + timeout))
  names=$(project_containers)
  [ -n "$names" ] || die "project $project has no containers"
  while :; do
    pending=()
    for name in $names; do
      # A container that keeps exiting will not become healthy: say so now, not at the deadline.
      if [ "$(podman inspect --format '{{.RestartCount}}' "$name")" -ge "$max_restarts" ]; then
        die "$name keeps exiting (see: $0 logs)"
      fi
      if [ "$(podman inspect --format '{{.State.Status}}' "$name")" != running ]; then
        pending+=("$name (not running)")
      elif [ -n "$(podman inspect --format '{{if .Config.Healthcheck}}yes{{end}}' "$name")" ] &&
        ! podman healthcheck run "$name" >/dev/null 2>&1; then
        pending+=("$name (unhealthy)")
      fi
    done
    [ "${#pending[@]}" -eq 0 ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "not healthy after ${timeout} s: ${pending[*]}"
    fi
    sleep 0.5
  done
}

cmd_up() {
  need podman-compose "pip install podman-compose"
  podman image exists "$THALASSA_IMAGE" || die "no image $THALASSA_IMAGE: run '$0 build' first"
  local started created output
  started=$(date +%s%N)
  # podman-compose's own output (and podman's complaints about the missing systemd) only
  # matters when it fails.
  output=$(podman-compose up --detach --no-build 2>&1) || {
    printf '%s\n' "$output" >&2
    die "podman-compose up failed"
  }
  created=$(date +%s%N)
  cmd_wait_healthy
  log "stack $project healthy $((($(date +%s%N) - started) / 1000000)) ms after up" \
    "(containers started in $(((created - started) / 1000000)) ms)"
}

cmd_down() {
  need podman-compose "pip install podman-compose"
  podman-compose down --volumes --timeout 10 >/dev/null 2>&1 || true
  # Whatever the compose tool left behind (e.g. after an interrupted up) goes too.
  local leftovers
  leftovers=$(project_containers)
  if [ -n "$leftovers" ]; then
    # shellcheck disable=SC2086 # one name per word
    podman rm --force --time 5 $leftovers >/dev/null
  fi
  podman volume ls --quiet --filter "label=io.podman.compose.project=$project" |
    xargs --no-run-if-empty podman volume rm --force >/dev/null
  podman network ls --quiet --filter "label=io.podman.compose.project=$project" |
    xargs --no-run-if-empty podman network rm --force >/dev/null
  log "stack $project is down"
}

cmd_restart() {
  local name
  name=$(service_container "$1")
  [ -n "$name" ] || die "no container for service $1 in project $project"
  podman restart --time 10 "$name" >/dev/null 2>&1 || die "podman restart $name failed"
}

cmd_recreate() {
  need podman-compose "pip install podman-compose"
  local output
  output=$(podman-compose up --detach --no-build --force-recreate --no-deps "$1" 2>&1) || {
    printf '%s\n' "$output" >&2
    die "podman-compose up --force-recreate $1 failed"
  }
}

# `kill` (SIGKILL; podman's restart policy leaves a killed container stopped) or `start` a
# service's container.
cmd_container() {
  local name
  name=$(service_container "$2")
  [ -n "$name" ] || die "no container for service $2 in project $project"
  podman "$1" "$name" >/dev/null 2>&1 || die "podman $1 $name failed"
}

cmd_exec() {
  local name
  name=$(service_container "$1")
  [ -n "$name" ] || die "no container for service $1 in project $project"
  shift
  podman exec "$name" "$@"
}

cmd_ip() {
  local name
  name=$(service_container "$1")
  [ -n "$name" ] || die "no container for service $1 in project $project"
  podman inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{"\n"}}{{end}}' \
    "$name" | sed -n 1p
}

[ "$#" -gt 0 ] || die "usage: $0 base-image|build|build-web|up|wait-healthy|down|ip SERVICE|restart SERVICE|recreate SERVICE|kill SERVICE|start SERVICE|exec SERVICE COMMAND...|ps|logs ..."
need podman "apt-get install podman runc"
while [ "$#" -gt 0 ]; do
  command=$1
  shift
  case "$command" in
  base-image) cmd_base_image ;;
  build) cmd_build ;;
  build-web) cmd_build_web ;;
  up) cmd_up ;;
  wait-healthy) cmd_wait_healthy ;;
  down) cmd_down ;;
  ip | restart | recreate)
    [ "$#" -gt 0 ] || die "usage: $0 $command SERVICE"
    "cmd_$command" "$1"
    shift
    ;;
  kill | start)
    [ "$#" -gt 0 ] || die "usage: $0 $command SERVICE"
    cmd_container "$command" "$1"
    shift
    ;;
  exec)
    [ "$#" -gt 1 ] || die "usage: $0 exec SERVICE COMMAND..."
    cmd_exec "$@"
    exit
    ;;
  ps) podman ps --all --filter "label=io.podman.compose.project=$project" ;;
  logs)
    for name in $(project_containers); do
      printf '===== %s\n' "$name"
      podman logs "$name" 2>&1 | tail -n 200
    done
    ;;
  *) die "unknown command $command" ;;
  esac
done
