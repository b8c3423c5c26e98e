#!/usr/bin/env bash
# Collectives and the sharder over TCP between hosts, on one machine: 2 namespace hosts x 2 ranks
# (Launch/netns), links unshaped, shaped to 10 Gbit/s (a typical cluster Ethernet link) and to 1 Gbit/s
# (a slow one) with a token bucket (tc tbf on every host's link), against 4 ranks on shared memory.
# Latency is not shaped: this machine's kernel has no netem (CONFIG_NET_SCH_NETEM is not set); where
# it has, pass e.g. LINKS="cluster:netem delay 0.025ms rate 10gbit;slow:netem delay 0.25ms rate 1gbit". For each: `bench comm` (bus bandwidth per collective and size) and `bench step` of ViT-S/14
# (FULL_SHARD over all 4 ranks, 2 images a rank, SK centering) for the exposed communication.
#   bash Benchmarks/tcp-links.sh BINARY [OUT]      (BINARY: a copy of .build/release/dinov2-fsdp)
# Writes OUT/{shm,tcp-none,tcp-cluster,tcp-slow}-{comm,step}.json (default OUT=Benchmarks/tcp-links)
# and prints a table. Needs root (namespaces); takes about 10 minutes here.
set -euo pipefail
binary="${1:?usage: tcp-links.sh BINARY [OUT]}"
out="${2:-Benchmarks/tcp-links}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$out"
export DINO_NETNS_PREFIX=dinob
trap 'bash "$root/Launch/netns/hosts.sh" down dinob' EXIT
comm=(bench comm --max-bytes 16777216 --max-iterations 20)
step=(bench step --config "$root/Configs/vits14.yaml" --threads 1 --steps 2 --warmup 1
  train.batch_size_per_gpu=2 train.centering=sinkhorn_knopp student.drop_path_rate=0 crops.local_crops_size=98
  fsdp.sharding_strategy=FULL_SHARD --skip-memory-check)

echo "shared memory, 4 ranks"
bash "$root/Launch/mpirun.sh" -n 4 "$binary" "${comm[@]}" --json "$out/shm-comm.json" > "$out/shm-comm.log"
bash "$root/Launch/mpirun.sh" -n 4 "$binary" "${step[@]}" --json "$out/shm-step.json" > "$out/shm-step.log"

bash "$root/Launch/netns/hosts.sh" up 2 dinob
links="${LINKS:-cluster:tbf rate 10gbit burst 4mb latency 20ms;slow:tbf rate 1gbit burst 512kb latency 20ms}"
IFS=';' read -r -a shaped <<<"$links"
for link in "none:" "${shaped[@]}"; do
  name="${link%%:*}" qdisc="${link#*:}"
  if [ -n "$qdisc" ]; then bash "$root/Launch/netns/hosts.sh" shape "$qdisc" dinob; fi
  echo "TCP, 2 hosts x 2 ranks, link: ${qdisc:-unshaped}"
  bash "$root/Launch/netns/mpirun.sh" 2 2 "$binary" "${comm[@]}" --json "$out/tcp-$name-comm.json" \
    > "$out/tcp-$name-comm.log"
  bash "$root/Launch/netns/mpirun.sh" 2 2 "$binary" "${step[@]}" --json "$out/tcp-$name-step.json" \
    > "$out/tcp-$name-step.log"
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print("| transport | link | allgather busbw 16 MiB | reduce-scatter busbw 16 MiB | allreduce 64 KiB time | "
      "step s | comm total s | comm exposed s | exposed share |")
print("|---|---|---|---|---|---|---|---|---|")
for name, link in [("shm", "shared memory"), ("tcp-none", "unshaped veth"),
                   ("tcp-cluster", "10 Gbit/s token bucket"), ("tcp-slow", "1 Gbit/s token bucket")]:
    comm = json.load(open(f"{out}/{name}-comm.json"))
    step = json.load(open(f"{out}/{name}-step.json"))
    def row(op, size):
        rows = [r for r in comm["records"] if r["collective"] == op.replace("_", "") and r["bytes"] == size]
        return rows[0] if rows else None
    def bw(op, size):
        r = row(op, size)
        return f'{r["busbw_gbps"]:.2f} GB/s' if r else "?"
    small = row("allreduce", 65536)
    latency = f'{small["time_us"]:.0f} us' if small else "?"
    exposed = step["time_comm_exposed"]
    print(f'| {"shm" if name == "shm" else "TCP"} | {link} | {bw("allgather", 16777216)} | '
          f'{bw("reduce_scatter", 16777216)} | {latency} | {step["time_step"]:.2f} | '
          f'{step["time_comm_total"]:.2f} | {exposed:.2f} | {exposed / step["time_step"]:.3f} |')
PY
