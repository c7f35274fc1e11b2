#!/usr/bin/env bash
# Start a single-host SLURM (munge, slurmctld, slurmd; as root) for the cluster tests; stop.sh stops it.
# Needs: apt-get install -y slurm-wlm munge. State and logs: $SLURM_CI_STATE (default /tmp/memaudit-slurm).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${SLURM_CI_STATE:-/tmp/memaudit-slurm}"
mkdir -p "$state/ctld" "$state/d" /etc/slurm /run/munge /var/log/munge /var/lib/munge /etc/munge
cpus="$(nproc)"
mem="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))"
sed -e "s|@CPUS@|$cpus|" -e "s|@MEM@|$mem|" -e "s|@STATE@|$state|g" "$here/slurm.conf" > /etc/slurm/slurm.conf
if ! pgrep -u munge -x munged >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; }
  chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
  chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
  su -s /bin/sh munge -c "/usr/sbin/munged"
fi
[ -f "$state/slurmctld.pid" ] && kill -0 "$(cat "$state/slurmctld.pid")" 2>/dev/null || slurmctld
[ -f "$state/slurmd.pid" ] && kill -0 "$(cat "$state/slurmd.pid")" 2>/dev/null || slurmd
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then echo "slurm up ($cpus CPUs)"; exit 0; fi
  sleep 0.5
done
echo "slurm did not come up; logs in $state" >&2; sinfo >&2 || true; exit 1
