#!/usr/bin/env bash
# Runs Launch/slurm/train.sbatch on a real one-node Slurm (Launch/slurm/local-cluster.sh) with the tiny
# test config and 2 tasks, twice:
#   A  a job that runs to its end (8 iterations) into OUT/a;
#   B  a job with a one-minute limit and the template's early signal moved to 40 s before it, long
#      enough (30000 iterations, about 70 s here; Slurm checks limits every 30 s, so the signal comes
#      within about 30 s) to be running when SIGUSR1 comes: it must checkpoint, requeue itself
#      and, started again, resume and finish into OUT/b. Once it is requeued its limit is raised to 10
#      minutes and its start brought forward (Slurm holds a requeued job about two minutes), so the
#      second start runs to the end instead of being signalled again.
# Usage: slurm-jobs.sh DATA OUT   (DATA: an ImageFolder root with train/; $DINOV2_FSDP: the binary)
# The test suite runs it (Tests/MPIIntegrationTests/SlurmTests.swift) and compares the metrics with
# an uninterrupted run. Everything it starts it stops (the cluster, and any job left on failure).
set -euo pipefail
data="${1:?usage: slurm-jobs.sh DATA OUT}"
out="${2:?usage: slurm-jobs.sh DATA OUT}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$(dirname "$here")")"
state="$out/slurm"
mkdir -p "$out"
job=""
cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "--- slurmctld log (last 30 lines)"; tail -n 30 "$state/log/slurmctld.log" 2>/dev/null || true
  fi
  [ -n "$job" ] && scancel "$job" 2>/dev/null || true
  bash "$root/Launch/slurm/local-cluster.sh" stop "$state" >/dev/null
}
trap cleanup EXIT
bash "$root/Launch/slurm/local-cluster.sh" start "$state"
export SLURM_CONF="$state/slurm.conf"
cd "$root"
submit=(sbatch --parsable --nodes=1 --ntasks-per-node=2 --chdir="$root" --open-mode=append)
common=(Configs/tests/tiny.yaml)

echo "job A: tiny config, 2 tasks, to the end"
"${submit[@]}" --wait --time=5 --output="$out/a.log" Launch/slurm/train.sbatch "${common[@]}" "$out/a" \
  "train.dataset_path=$data/train" >/dev/null || { echo "error: job A failed:"; cat "$out/a.log"; exit 1; }
grep -q "finished at iteration 8" "$out/a.log" || { echo "error: job A did not finish:"; cat "$out/a.log"; exit 1; }

echo "job B: one-minute limit, SIGUSR1 40 s before it"
job=$("${submit[@]}" --time=1 --signal=B:USR1@40 --output="$out/b.log" Launch/slurm/train.sbatch "${common[@]}" \
  "$out/b" "train.dataset_path=$data/train" train.OFFICIAL_EPOCH_LENGTH=15000 train.log_every=1000 \
  checkpointing.period=100000)
deadline=$((SECONDS + 240))
until grep -q "requeueing job $job" "$out/b.log" 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { echo "error: job B was not requeued:"; cat "$out/b.log"; exit 1; }
  sleep 0.5
done
# The requeued job is pending until its begin time; give the second start time to finish.
until [ "$(squeue -h -j "$job" -o %T 2>/dev/null)" = "PENDING" ]; do sleep 0.2; done
scontrol update JobId="$job" TimeLimit=10
# Not within the second of the requeue: slurmd revokes the previous run's credential with a time in whole
# seconds, and a new launch in that same second is refused ("Killing non-startable batch JobId=2: Job
# credential revoked" in slurmctld's log; the rare failure of this test before this wait).
sleep 2
scontrol update JobId="$job" StartTime=now 2>/dev/null || true  # fails only if it has started already
until [ -z "$(squeue -h -j "$job" -o %T 2>/dev/null)" ]; do
  [ $SECONDS -lt $((deadline + 300)) ] || { echo "error: job B did not end:"; cat "$out/b.log"; exit 1; }
  sleep 0.5
done
job=""
grep -q "stop requested: saved iteration" "$out/b.log" && grep -q "resumed from" "$out/b.log" \
  && grep -q "finished at iteration 30000" "$out/b.log" \
  || { echo "error: job B did not checkpoint, resume and finish:"; cat "$out/b.log"; exit 1; }
echo "slurm jobs done: $(grep -o 'stop requested: saved iteration [0-9]*' "$out/b.log")"
