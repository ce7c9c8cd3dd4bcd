#!/usr/bin/env bash
# Installs SafeEdge as a systemd service. Run as root on the edge box.
#
#   install.sh [--from-bundle DIR|ARCHIVE] [--prefix DIR] [--dry-run] [--no-system]
#
#   (no --from-bundle)  install from this checkout (needs the package index for dependencies)
#   --from-bundle B     install from an offline bundle (make bundle): no network at all; the
#                       wheels are checked against the bundle's SHA256SUMS and installed in
#                       pip's hash-checking mode with the index disabled
#   --prefix DIR        where the virtual environment and docs go (default /opt/safeedge);
#                       the unit's paths follow it
#   --dry-run           print every command instead of running it; changes nothing
#   --no-system         only the virtual environment (no user, /etc, unit or systemctl):
#                       for a second venv or a test
#
# Files (docs/operations.md): config /etc/safeedge/agent.toml, secrets as systemd credentials in
# /etc/safeedge/credentials/ (buffer.key, broker-password), state /var/lib/safeedge, numba cache
# /var/cache/safeedge, status socket /run/safeedge/status.sock.
set -euo pipefail

prefix=/opt/safeedge
bundle=""
dry=0
system=1
while [ $# -gt 0 ]; do
  case "$1" in
    --from-bundle) bundle="${2:?--from-bundle needs a directory or archive}"; shift 2 ;;
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --no-system) system=0; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

run() {
  if [ "$dry" = 1 ]; then printf '+ %s\n' "$*"; else "$@"; fi
}

src="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "$bundle" ]; then
  if [ -f "$bundle" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    tar -xzf "$bundle" -C "$work"
    bundle="$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)"
  fi
  [ -f "$bundle/requirements.txt" ] || { echo "install.sh: $bundle is not a SafeEdge bundle" >&2; exit 2; }
  (cd "$bundle" && sha256sum --quiet -c SHA256SUMS) \
    || { echo "install.sh: the bundle's files do not match SHA256SUMS: copy it again" >&2; exit 1; }
  want="$(sed -n 's/^python=//p' "$bundle/TARGET") $(sed -n 's/^machine=//p' "$bundle/TARGET")"
  have="$(python3 -c 'import sys, platform; print(f"{sys.version_info[0]}.{sys.version_info[1]} {platform.machine()}")')"
  if [ "$want" != "$have" ]; then
    echo "install.sh: the bundle is for Python/machine $want, this box has $have: build it there (make bundle)" >&2
    exit 2
  fi
  unit="$bundle/safeedge.service"; docs="$bundle/docs"; example="$bundle/examples/reference.toml"
else
  unit="$src/systemd/safeedge.service"; docs="$src/docs"; example="$src/examples/reference.toml"
fi

if [ "$system" = 1 ]; then
  id -u safeedge >/dev/null 2>&1 \
    || run useradd --system --home /var/lib/safeedge --shell /usr/sbin/nologin safeedge
  run usermod -aG dialout safeedge
  run mkdir -p /etc/safeedge
fi
run mkdir -p "$prefix"
run python3 -m venv "$prefix/.venv"
if [ -n "$bundle" ]; then
  # hash-checking mode: every wheel pinned to the bundle's sha256; the index is never asked
  run env PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null "$prefix/.venv/bin/pip" install --quiet \
    --no-index --find-links "$bundle/wheels" --require-hashes -r "$bundle/requirements.txt"
else
  run cp -r "$src/agent" "$src/drivers" "$src/rules" "$src/buffer" "$src/provisioning" "$src/central" \
    "$src/pyproject.toml" "$src/README.md" "$prefix/"
  run "$prefix/.venv/bin/pip" install --quiet "$prefix"
fi
run rm -rf "$prefix/docs"
run cp -r "$docs" "$prefix/docs"
if [ "$system" = 1 ]; then
  # Compile the rule kernels now, as the service user, into the unit's NUMBA_CACHE_DIR: the
  # first start then loads them instead of compiling while the site waits, and with a C
  # compiler (gcc, python3-dev) as native modules, so the agent runs without numba (~145 MB
  # less). Without one, warm-cache says so and the agent uses numba's JIT cache.
  run install -d -o safeedge -g safeedge -m 0750 /var/cache/safeedge /var/cache/safeedge/numba
  run runuser -u safeedge -- "$prefix/.venv/bin/safeedge" warm-cache --cache-dir /var/cache/safeedge/numba
fi

if [ "$system" = 1 ]; then
  if [ ! -f /etc/safeedge/agent.toml ]; then
    run cp "$example" /etc/safeedge/agent.toml
    echo "edit /etc/safeedge/agent.toml, then: $prefix/.venv/bin/safeedge check-config /etc/safeedge/agent.toml"
  fi
  run chown -R root:safeedge /etc/safeedge
  run chmod 0750 /etc/safeedge
  # Credentials: root-only files; systemd hands the service a private read-only copy.
  creds=/etc/safeedge/credentials
  run install -d -m 0700 -o root -g root "$creds"
  if [ ! -f "$creds/buffer.key" ]; then
    if [ -f /var/lib/safeedge/buffer.key ]; then  # an install from before credentials: keep it
      run install -m 0600 -o root -g root /var/lib/safeedge/buffer.key "$creds/buffer.key"
    else
      run "$prefix/.venv/bin/python" -c 'import sys, time; from pathlib import Path; from buffer import crypto
crypto.write_key_file(Path(sys.argv[1]), [crypto.new_key(1, "aes-256-gcm", time.time_ns() // 10**6)])' \
        "$creds/buffer.key"
    fi
  fi
  # empty = no password; put the broker password here instead of uplink.password_file
  [ -f "$creds/broker-password" ] || run install -m 0600 -o root -g root /dev/null "$creds/broker-password"
  if [ "$dry" = 1 ]; then
    printf '+ sed s#/opt/safeedge#%s#g %s > /etc/systemd/system/safeedge.service\n' "$prefix" "$unit"
  else
    sed "s#/opt/safeedge#$prefix#g" "$unit" > /etc/systemd/system/safeedge.service
    chmod 0644 /etc/systemd/system/safeedge.service
  fi
  if [ -d /run/systemd/system ]; then
    run systemctl daemon-reload
  else
    echo "systemd is not running here: run 'systemctl daemon-reload' once it is"
  fi
  echo "installed; commission it: $prefix/.venv/bin/safeedge commission --config /etc/safeedge/agent.toml"
  echo "then start it: systemctl enable --now safeedge; reload with: systemctl reload safeedge"
else
  echo "installed into $prefix/.venv"
fi
