#!/usr/bin/env bash
# Installs SafeEdge as a systemd service from this checkout. Run as root on the edge box.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
prefix=/opt/safeedge
id -u safeedge >/dev/null 2>&1 || useradd --system --home /var/lib/safeedge --shell /usr/sbin/nologin safeedge
usermod -aG dialout safeedge
mkdir -p "$prefix" /etc/safeedge
cp -r "$src/agent" "$src/drivers" "$src/rules" "$src/buffer" "$src/provisioning" "$src/central" \
      "$src/docs" "$src/pyproject.toml" "$src/README.md" "$prefix/"
python3 -m venv "$prefix/.venv"
"$prefix/.venv/bin/pip" install --quiet "$prefix"
# Compile the rule kernels now, as the service user, into the unit's NUMBA_CACHE_DIR: the first
# start then loads them from the cache instead of compiling while the site waits.
install -d -o safeedge -g safeedge -m 0750 /var/cache/safeedge /var/cache/safeedge/numba
runuser -u safeedge -- "$prefix/.venv/bin/safeedge" warm-cache --cache-dir /var/cache/safeedge/numba
if [ ! -f /etc/safeedge/agent.toml ]; then
  cp "$src/examples/reference.toml" /etc/safeedge/agent.toml
  echo "edit /etc/safeedge/agent.toml, then: safeedge check-config /etc/safeedge/agent.toml"
fi
chown -R root:safeedge /etc/safeedge && chmod 0750 /etc/safeedge
install -m 0644 "$src/systemd/safeedge.service" /etc/systemd/system/safeedge.service
systemctl daemon-reload
echo "installed; start with: systemctl enable --now safeedge"
