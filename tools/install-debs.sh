#!/usr/bin/env bash
# Debian packages the tests need: etcd for the local control plane, Prometheus and Alertmanager for the
# monitoring tests, wrk for benchmarks, openssl for the control plane's service-account key. Installs only
# what is missing.
set -euo pipefail
want=(etcd-server openssl prometheus prometheus-alertmanager wrk)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Debian's service scripts must not start daemons on install: the tests start their own.
printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null; $sudo chmod +x /usr/sbin/policy-rc.d
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
$sudo rm -f /usr/sbin/policy-rc.d
