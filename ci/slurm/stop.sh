#!/usr/bin/env bash
# Stop what start.sh started (slurmd, slurmctld; munged only if MEMAUDIT_STOP_MUNGE=1).
state="${SLURM_CI_STATE:-/tmp/memaudit-slurm}"
for d in slurmd slurmctld; do
  [ -f "$state/$d.pid" ] && kill "$(cat "$state/$d.pid")" 2>/dev/null || true
done
if [ "${MEMAUDIT_STOP_MUNGE:-0}" = 1 ] && [ -f /run/munge/munged.pid ]; then kill "$(cat /run/munge/munged.pid)" || true; fi
exit 0
