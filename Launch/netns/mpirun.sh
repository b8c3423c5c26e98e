#!/usr/bin/env bash
# mpirun across the namespace hosts of Launch/netns/hosts.sh, over TCP only (no shared memory, not
# even between ranks of one host), as on a cluster without a fast interconnect:
#   bash Launch/netns/mpirun.sh HOSTS RANKS_PER_HOST PROGRAM [ARGS...]
# runs HOSTS x RANKS_PER_HOST ranks, rank r on host r / RANKS_PER_HOST; mpirun itself runs in host 1.
# Each host has its own host name (dino-i), so MPI's node-local groups (HYBRID_SHARD's default
# groups) are the hosts. Needs root; signals are forwarded as by Launch/mpirun.sh (wait-forwarding.sh).
set -euo pipefail
hosts="${1:?usage: mpirun.sh HOSTS RANKS_PER_HOST PROGRAM [ARGS...]}"
per="${2:?usage: mpirun.sh HOSTS RANKS_PER_HOST PROGRAM [ARGS...]}"
shift 2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix="${DINO_NETNS_PREFIX:-dino}"
list=""
for i in $(seq "$hosts"); do
  ip netns list | awk '{print $1}' | grep -qx "$prefix-$i" \
    || { echo "error: host $prefix-$i is missing; run: bash Launch/netns/hosts.sh up $hosts" >&2; exit 1; }
  list+="${list:+,}10.213.0.$i:$per"
done
program="$1"
shift
# A bare dinov2-fsdp means this checkout's release build when built.
if [ "$program" = "dinov2-fsdp" ] && [ -x "$here/../../.build/release/dinov2-fsdp" ]; then
  program="$(cd "$here/../.." && pwd)/.build/release/dinov2-fsdp"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 DINO_NETNS_PREFIX="$prefix"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
flags=(--allow-run-as-root --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -n $((hosts * per))
  --host "$list" --mca plm_rsh_agent "$here/agent.sh" --mca btl tcp,self
  --mca btl_tcp_if_include 10.213.0.0/24 --mca oob_tcp_if_include 10.213.0.0/24 -x OPENBLAS_NUM_THREADS
  -x DINO_NETNS_PREFIX)
quoted=$(printf '%q ' mpirun "${flags[@]}" "$program" "$@")
ip netns exec "$prefix-1" unshare --uts /bin/sh -c "hostname $prefix-1; exec $quoted" &
# shellcheck source=Launch/wait-forwarding.sh
source "$here/../wait-forwarding.sh"
wait_forwarding_signals $!
