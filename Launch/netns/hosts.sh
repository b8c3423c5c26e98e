#!/usr/bin/env bash
# Hosts on one machine for multi-host tests: network namespaces joined by veth links to a bridge that
# lives in a namespace of its own, so every address involved exists only inside them:
#   bash Launch/netns/hosts.sh up N [PREFIX]   # hosts PREFIX-1..N at 10.213.0.1..N/24, PREFIX-switch
#   bash Launch/netns/hosts.sh shape "QDISC"    # a tc root qdisc on every host's link, e.g.
#                                               # "tbf rate 1gbit burst 512kb latency 20ms", or "netem
#                                               # delay 0.25ms rate 1gbit" where the kernel has netem
#   bash Launch/netns/hosts.sh down [PREFIX]    # removes them all
# Each host namespace has lo and eth0 (10.213.0.i). Open MPI starts ranks in them through
# Launch/netns/agent.sh (its rsh agent); Launch/netns/mpirun.sh puts it together. Needs root.
set -euo pipefail
action="${1:?usage: hosts.sh up N [PREFIX] | shape QDISC [PREFIX] | down [PREFIX]}"
case "$action" in
  up) count="${2:?usage: hosts.sh up N [PREFIX]}"; prefix="${3:-dino}" ;;
  shape) qdisc="${2:?usage: hosts.sh shape QDISC [PREFIX]}"; prefix="${3:-dino}" ;;
  down) prefix="${2:-dino}" ;;
  *) echo "usage: hosts.sh up N [PREFIX] | shape QDISC [PREFIX] | down [PREFIX]" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "error: network namespaces need root" >&2; exit 1; }
hosts() { ip netns list | awk '{print $1}' | grep -E "^$prefix-[0-9]+$" | sort -t- -k2 -n || true; }

down() {
  for h in $(hosts); do ip netns del "$h"; done
  ip netns list | awk '{print $1}' | grep -qx "$prefix-switch" && ip netns del "$prefix-switch"
  return 0
}

case "$action" in
  down) down; exit 0 ;;
  shape)
    for h in $(hosts); do
      # shellcheck disable=SC2086  # the qdisc and its parameters are words
      ip netns exec "$h" tc qdisc replace dev eth0 root $qdisc \
        || { echo "error: tc cannot set '$qdisc' here (a kernel without that qdisc?)" >&2; exit 1; }
    done
    echo "links of $(hosts | wc -l) hosts shaped: $qdisc"
    exit 0 ;;
esac

down
ip netns add "$prefix-switch"
ip -n "$prefix-switch" link add br0 type bridge
ip -n "$prefix-switch" link set br0 up
for i in $(seq "$count"); do
  h="$prefix-$i"
  ip netns add "$h"
  ip link add "$h-eth0" netns "$h" type veth peer name "port$i" netns "$prefix-switch"
  ip -n "$h" link set "$h-eth0" name eth0
  ip -n "$h" addr add "10.213.0.$i/24" dev eth0
  ip -n "$h" link set lo up
  ip -n "$h" link set eth0 up
  ip -n "$prefix-switch" link set "port$i" master br0
  ip -n "$prefix-switch" link set "port$i" up
done
echo "hosts up: $(hosts | tr '\n' ' ')(10.213.0.1-$count)"
