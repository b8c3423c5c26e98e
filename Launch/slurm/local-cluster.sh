#!/usr/bin/env bash
# A real one-node Slurm on this machine, for tests and for trying Launch/slurm/train.sbatch:
#   bash Launch/slurm/local-cluster.sh start [STATE_DIR]   # installs slurm-wlm + munge when missing
#   export SLURM_CONF=STATE_DIR/slurm.conf                  # what `start` prints; then sbatch, squeue...
#   bash Launch/slurm/local-cluster.sh stop [STATE_DIR]     # stops everything `start` started
# The cluster lives in STATE_DIR (default /tmp/dinov2-fsdp-slurm): its slurm.conf (this host as the
# only node, every core, partition "local"), state, spool, logs and the daemons' pid files. Nothing
# is written under /etc; munged runs with its own socket, key and pid file in STATE_DIR. Needs root
# (slurmd starts jobs as their users).
set -euo pipefail
action="${1:?usage: local-cluster.sh start|stop [STATE_DIR]}"
state="${2:-/tmp/dinov2-fsdp-slurm}"
conf="$state/slurm.conf"
socket="$state/munge/munge.socket"

stop() {
  for daemon in slurmd slurmctld munged; do
    if [ -f "$state/$daemon.pid" ]; then
      pid=$(cat "$state/$daemon.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$state/$daemon.pid"
    fi
  done
}

case "$action" in
  stop)
    stop
    echo "local Slurm in $state stopped"
    exit 0 ;;
  start) ;;
  *) echo "usage: local-cluster.sh start|stop [STATE_DIR]" >&2; exit 2 ;;
esac

[ "$(id -u)" -eq 0 ] || { echo "error: local-cluster.sh needs root (slurmd runs jobs as their users)" >&2; exit 1; }
missing=()
for p in slurm-wlm munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "local-cluster: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stop  # a previous cluster in the same folder
mkdir -p "$state"/{munge,state,spool,log}
chmod 700 "$state/munge"
[ -f "$state/munge/munge.key" ] || head -c 1024 /dev/urandom > "$state/munge/munge.key"
chmod 400 "$state/munge/munge.key"
munged --force --key-file="$state/munge/munge.key" --socket="$socket" --pid-file="$state/munged.pid" \
  --log-file="$state/log/munged.log" --seed-file="$state/munge/munge.seed"

host=$(hostname -s)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
cat > "$conf" <<EOF
# Written by Launch/slurm/local-cluster.sh: one node ($host), $cpus CPUs.
ClusterName=dinov2fsdp
SlurmctldHost=$host
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/state
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
MinJobAge=300
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$conf"
slurmctld -f "$conf"
slurmd -f "$conf"
for _ in $(seq 100); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "local Slurm up in $state: export SLURM_CONF=$conf"
    exit 0
  fi
  sleep 0.2
done
echo "error: the local Slurm did not come up; see $state/log/" >&2
stop
exit 1
