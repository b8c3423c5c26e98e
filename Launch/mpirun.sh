#!/usr/bin/env bash
# mpirun for dinov2-fsdp on one machine (laptop, workstation, one node):
#   Launch/mpirun.sh -n 8 dinov2-fsdp train [args]
# Adds what Open MPI needs here so users do not have to remember it:
#   --allow-run-as-root             when running as root (containers, CI)
#   --oversubscribe                 more ranks than cores is allowed (e.g. 8 ranks on 2 cores)
#   --bind-to none                  unbound ranks: with -n <= 2 the default core binding silently
#                                   limits OpenBLAS to one thread
#   --mca mpi_yield_when_idle 1     waiting ranks yield their core to computing ones
#   OPENBLAS_NUM_THREADS            1 when ranks >= cores (ranks already fill the cores; more BLAS
#                                   threads only contend), else cores / ranks; an explicit value wins
# A bare `dinov2-fsdp` means this checkout's release build when there is one, else the one on PATH.
# SIGINT and SIGUSR1 reaching this script are forwarded to mpirun, which passes them to every rank
# (SIGUSR1 asks training to checkpoint and stop); SIGTERM is forwarded as SIGUSR1 (wait-forwarding.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

ranks=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n|-np|--np|-c) ranks="$2"; args+=("$1" "$2"); shift 2 ;;
    --) shift; break ;;
    -*) args+=("$1"); shift ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 -n RANKS [mpirun options] PROGRAM [ARGS...]" >&2; exit 2; }

program="$1"; shift
if [ "$program" = "dinov2-fsdp" ]; then
  if [ -x "$root/.build/release/dinov2-fsdp" ]; then program="$root/.build/release/dinov2-fsdp"
  elif ! command -v dinov2-fsdp >/dev/null 2>&1; then
    echo "error: dinov2-fsdp is not built; run Launch/setup.sh (or swift build -c release)" >&2; exit 2
  fi
fi

cores=$(nproc)
if [ -z "${OPENBLAS_NUM_THREADS:-}" ]; then
  if [ "$ranks" -ge "$cores" ]; then export OPENBLAS_NUM_THREADS=1
  else export OPENBLAS_NUM_THREADS=$(( cores / ranks )); fi
fi

flags=(--oversubscribe --bind-to none --mca mpi_yield_when_idle 1)
if [ "$(id -u)" -eq 0 ]; then
  flags+=(--allow-run-as-root)
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Shared-memory transport only on one machine; silences the search for network interfaces.
flags+=(--mca btl self,vader)

mpirun "${flags[@]}" -x OPENBLAS_NUM_THREADS "${args[@]}" "$program" "$@" &
# shellcheck source=Launch/wait-forwarding.sh
source "$here/wait-forwarding.sh"
wait_forwarding_signals $!
