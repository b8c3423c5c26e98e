# Sourced by the launch wrappers (Launch/mpirun.sh, Launch/netns/mpirun.sh): waits for the mpirun
# started in the background as PID and exits with its status, forwarding what reaches the wrapper.
# SIGINT and SIGUSR1 go to mpirun, which passes them to every rank (SIGUSR1 asks training to save and
# stop). mpirun itself treats SIGTERM as "kill the job", so a SIGTERM here (a scheduler's, `timeout`'s)
# is forwarded as SIGUSR1: the ranks save and stop at the next iteration (other subcommands end on it).
wait_forwarding_signals() {
  local child="$1" status=0
  # shellcheck disable=SC2064  # the pid is meant to be expanded now
  trap "kill -s INT $child 2>/dev/null || true" INT
  trap "kill -s USR1 $child 2>/dev/null || true" TERM USR1
  while true; do
    wait "$child" && status=0 || status=$?
    # wait returns >128 when a trapped signal interrupted it; keep waiting for mpirun itself.
    kill -0 "$child" 2>/dev/null || break
  done
  exit "$status"
}
