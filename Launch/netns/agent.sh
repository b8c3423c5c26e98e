#!/usr/bin/env bash
# Open MPI's rsh agent for the namespace hosts of Launch/netns/hosts.sh: called as `agent.sh [ssh
# options] HOST COMMAND...` (HOST 10.213.0.i), it runs COMMAND in namespace dino-i, in a UTS namespace
# of its own whose hostname is dino-i (Open MPI tells nodes apart by their host names), as ssh would
# run it on that host. $DINO_NETNS_PREFIX names the namespaces (default dino).
set -euo pipefail
prefix="${DINO_NETNS_PREFIX:-dino}"
while [ $# -gt 0 ] && [[ "$1" == -* ]]; do
  case "$1" in -o|-l|-p|-i|-F) shift 2 ;; *) shift ;; esac
done
host="${1:?agent.sh: no host}"
shift
case "$host" in
  10.213.0.*) index="${host##*.}" ;;
  "$prefix"-*) index="${host##*-}" ;;
  *) echo "agent.sh: $host is not a namespace host (10.213.0.i or $prefix-i); refusing" >&2; exit 1 ;;
esac
exec ip netns exec "$prefix-$index" unshare --uts /bin/sh -c "hostname $prefix-$index; $*"
