#!/usr/bin/env bash
# Installs SafeEdge as a systemd service from this checkout. Run as root on the edge box.
# Files (docs/operations.md): config /etc/safeedge/agent.toml, secrets as systemd credentials in
# /etc/safeedge/credentials/ (buffer.key, broker-password), state /var/lib/safeedge, numba cache
# /var/cache/safeedge, status socket /run/safeedge/status.sock.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
prefix=/opt/safeedge
creds=/etc/safeedge/credentials
id -u safeedge >/dev/null 2>&1 || useradd --system --home /var/lib/safeedge --shell /usr/sbin/nologin safeedge
usermod -aG dialout safeedge
mkdir -p "$prefix" /etc/safeedge
cp -r "$src/agent" "$src/drivers" "$src/rules" "$src/buffer" "$src/provisioning" "$src/central" \
      "$src/docs" "$src/pyproject.toml" "$src/README.md" "$prefix/"
python3 -m venv "$prefix/.venv"
"$prefix/.venv/bin/pip" install --quiet "$prefix"
if [ ! -f /etc/safeedge/agent.toml ]; then
  cp "$src/examples/reference.toml" /etc/safeedge/agent.toml
  echo "edit /etc/safeedge/agent.toml, then: safeedge check-config --files /etc/safeedge/agent.toml"
fi
chown -R root:safeedge /etc/safeedge && chmod 0750 /etc/safeedge
# Credentials: root-only files; systemd hands the service a private read-only copy.
install -d -m 0700 -o root -g root "$creds"
if [ ! -f "$creds/buffer.key" ]; then
  if [ -f /var/lib/safeedge/buffer.key ]; then  # an install from before credentials: keep it
    install -m 0600 -o root -g root /var/lib/safeedge/buffer.key "$creds/buffer.key"
  else
    "$prefix/.venv/bin/python" -c 'import sys, time; from pathlib import Path; from buffer import crypto
crypto.write_key_file(Path(sys.argv[1]), [crypto.new_key(1, "aes-256-gcm", time.time_ns() // 10**6)])' \
      "$creds/buffer.key"
  fi
fi
# empty = no password; put the broker password here instead of uplink.password_file
[ -f "$creds/broker-password" ] || install -m 0600 -o root -g root /dev/null "$creds/broker-password"
install -m 0644 "$src/systemd/safeedge.service" /etc/systemd/system/safeedge.service
systemctl daemon-reload
echo "installed; start with: systemctl enable --now safeedge; reload with: systemctl reload safeedge"
