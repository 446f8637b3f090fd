#!/usr/bin/env bash
# Keeps a Cloud TPU run going until it finishes, with no one at the keyboard.
#
#   launch/watch.sh [--dry-run] [--every=S] [--max-restarts=N] [--crash-budget=N]
#                   [--max-backoff=S] [--wait-limit=S] [--unknown-limit=S] [--grace=S]
#                   [--hang-limit=S] [ENV_FILE]
#
# Run it where it can stay up (Cloud Shell in tmux, a small VM), instead of steps 3 to 6
# of launch/README.md. Every S seconds (--every, default 120) it reads the TPU VM's state
# (the queued request's with QUEUED=yes) and the run's status on EVERY worker, and acts by
# the restart policy of launch/README.md ("Restart policy"), implemented in lib.sh:
# - finished (every worker exited 0): copies the workers' logs to WORKDIR/logs/, deletes
#   the slice (unless KEEP_SLICE=yes) and exits 0;
# - refused (exit 2, a bad config or checkpoint; or run.sh or create.sh refusing the
#   settings): the same, exit 2;
# - preempted (exit 75, killed by a signal from outside, a worker whose host restarted, or
#   the slice PREEMPTED, TERMINATED, STOPPED, STOPPING, SUSPENDED, SUSPENDING, FAILED or
#   gone): restarts, re-creating the slice where it is lost; no limit while the newest
#   checkpoint in WORKDIR advances between restarts, else --max-restarts (default 5)
#   restarts in a row;
# - crashed (any other exit status, SIGABRT and SIGSEGV included): restarts at most
#   --crash-budget times (default 2) in a row without checkpoint progress, then prints
#   every worker's last log lines, deletes the slice (unless KEEP_SLICE=yes), exits 1;
# - waiting for capacity (creating, provisioning, a re-create that fails in a stockout), a
#   gcloud error, no worker answering ssh, or a start that fails (ssh, scp): waits,
#   spending no budget, for at most --wait-limit s (default 86400) of wall clock;
# - an unknown state (REPAIRING, UNKNOWN, ...) or some worker not answering: waits at
#   most --unknown-limit s (default 1800), then deletes and re-creates the slice (a
#   restart of the budget above);
# - hung: every worker running but no new checkpoint for --hang-limit s (default 0: not
#   checked; set it well above the time to the first checkpoint, compile included, and
#   between checkpoints): a crash, restarted as one.
# Each event is accounted once, however many tries its restart takes. Every start is
# all-or-nothing: first launch/stop.sh --free ends, on every worker, whatever is left of
# the last run (SIGTERM, SIGKILL after --grace s, default 30) and frees the TPU; then
# launch/run.sh starts all workers. Waits after a failure double from S up to
# --max-backoff (default 1800), and fall back to S while the run is running or on
# checkpoint progress. Ctrl-C stops watching, not the run.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage() { sed -n '2,39s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options --every --max-restarts --crash-budget --max-backoff --wait-limit \
  --unknown-limit --grace --hang-limit
load_tpu_env
require ACCELERATOR_TYPE RUNTIME_VERSION CONFIG WORKDIR
every=$(option_value --every 120)
max_restarts=$(option_value --max-restarts 5)
crash_budget=$(option_value --crash-budget 2)
max_backoff=$(option_value --max-backoff 1800)
wait_limit=$(option_value --wait-limit 86400)
unknown_limit=$(option_value --unknown-limit 1800)
grace=$(option_value --grace 30)
hang_limit=$(option_value --hang-limit 0)
for option in every max_backoff wait_limit unknown_limit hang_limit; do
  [[ ${!option} =~ ^[0-9]+([.][0-9]+)?$ ]] ||
    die "--${option//_/-}=${!option} must be a number of seconds"
done
for option in max_restarts crash_budget grace; do
  [[ ${!option} =~ ^[0-9]+$ ]] || die "--${option//_/-}=${!option} must be a whole number"
done
KEEP_SLICE=${KEEP_SLICE:-no}
[[ $KEEP_SLICE == yes || $KEEP_SLICE == no ]] || die "KEEP_SLICE=$KEEP_SLICE must be yes or no"
hosts=$(tpu_hosts)
env_file=$(cd "$(dirname "$ENV_FILE")" && pwd)/$(basename "$ENV_FILE")
# shellcheck disable=SC2088  # ~ is for the worker's shell
pid_file="~/${LOG_FILE%.log}.pid"
# shellcheck disable=SC2088  # ~ is for the worker's shell
exit_file="~/${LOG_FILE%.log}.exit"

if [[ $QUEUED == yes ]]; then
  state_command=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${GCLOUD_TARGET[@]}"
    '--format=value(state.state)')
else
  state_command=(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_TARGET[@]}"
    '--format=value(state)')
fi
# One line from each worker: "run-status <running | none | exit status>".
run_state="if [ -f $exit_file ]; then s=\$(cat $exit_file); elif [ -f $pid_file ] && kill -0 \$(cat $pid_file) 2>/dev/null; then s=running; else s=none; fi; echo \"run-status \${s:-none}\""
steps_command=(gcloud storage ls "${WORKDIR%/}/checkpoints/")

if ((DRY_RUN)); then
  echo "# every $every s: the TPU VM's state, the run's on every worker, the newest checkpoint:"
  join_quoted "${state_command[@]}"; echo
  tpu_ssh all "$run_state"
  join_quoted "${steps_command[@]}"; echo
  echo "# lost (preempted, stopped, failed, gone), or unknown/unreachable past the limit:"
  echo "$LAUNCH_DIR/delete.sh --yes $env_file"
  echo "$LAUNCH_DIR/create.sh $env_file"
  echo "# ready, no run yet (setup.sh only where the venv is missing):"
  for script in copy_code.sh setup.sh; do echo "$LAUNCH_DIR/$script $env_file"; done
  echo "# before every start: what is left of the last run ended, the TPU freed:"
  echo "$LAUNCH_DIR/stop.sh --free --grace=$grace $env_file"
  echo "$LAUNCH_DIR/run.sh $env_file"
  exit 0
fi

note() { echo "[watch $(date -u +%FT%TZ)] $*" >&2; }
script() { bash "$LAUNCH_DIR/$1" "${@:2}" "$env_file" >&2; }
ssh_all() { tpu_ssh all "$1"; }

# The node's state word, MISSING when gcloud says it does not exist, GCLOUD_ERROR when
# gcloud failed otherwise (no network, an expired login, a quota on API calls).
node_state() {
  local out err
  err=$(mktemp)
  if out=$("${state_command[@]}" 2>"$err"); then
    echo "${out:-MISSING}"
  elif grep -q NOT_FOUND "$err"; then
    echo MISSING
  else
    echo GCLOUD_ERROR
  fi
  rm -f "$err"
}

# The slice's run status (lib.sh slice_status); unreachable when some of the slice's
# workers did not answer, silent when none did.
run_status() {
  local statuses=() line
  while read -r line; do
    [[ $line == run-status\ * ]] && statuses+=("${line#run-status }")
  done < <(ssh_all "$run_state" 2>/dev/null || true)
  if ((${#statuses[@]} == 0)); then
    echo silent
  elif ((${#statuses[@]} != hosts)); then
    echo unreachable
  else
    slice_status "${statuses[@]}"
  fi
}

# The newest checkpoint step in WORKDIR (-1 when none or when it cannot be listed).
newest_step() {
  local newest=-1 entry step
  while read -r entry; do
    step=${entry%/}
    step=${step##*/}
    [[ $step =~ ^[0-9]+$ ]] && ((10#$step > newest)) && newest=$((10#$step))
  done < <("${steps_command[@]}" 2>/dev/null || true)
  echo "$newest"
}

# Each worker's log, copied to WORKDIR/logs/<worker>.log (best effort: a lost slice has none).
save_logs() {
  ssh_all "gcloud storage cp ~/$LOG_FILE ${WORKDIR%/}/logs/\${MPL_WORKER_NAME:-\$(hostname)}.log" \
    >/dev/null 2>&1 && note "workers' logs copied to ${WORKDIR%/}/logs/" || true
}

# Ends the watch: logs saved, the slice deleted unless KEEP_SLICE=yes.
finish() {
  local status=$1
  shift
  save_logs
  if [[ $KEEP_SLICE == no && $(node_state) != MISSING ]]; then
    note "deleting $TPU_NAME (KEEP_SLICE=yes keeps it)"
    script delete.sh --yes || note "delete.sh failed: delete $TPU_NAME by hand, it bills"
  fi
  if ((status == 0)); then note "$*"; else echo "error: $*" >&2; fi
  exit "$status"
}

# Restart bookkeeping: progress (a newer checkpoint than at the last restart) resets both
# budgets and the backoff; otherwise each restart spends one of its kind's budget.
progress_step=$(newest_step)
stalled=0
crashes=0
delay=$every
account() {
  local kind=$1 step
  step=$(newest_step)
  if ((step > progress_step)); then
    progress_step=$step stalled=0 crashes=0 delay=$every
  fi
  if [[ $kind == crash ]]; then
    crashes=$((crashes + 1))
    if ((crashes > crash_budget)); then
      note "the run crashed $crashes times without checkpoint progress; each worker's last lines:"
      ssh_all "echo \"=== \${MPL_WORKER_NAME:-\$(hostname)}\"; tail -n 20 ~/$LOG_FILE" >&2 || true
      finish 1 "gave up: crashed $crashes times in a row (--crash-budget=$crash_budget)"
    fi
  else
    stalled=$((stalled + 1))
    ((stalled <= max_restarts)) || finish 1 \
      "gave up: $stalled restarts without checkpoint progress (--max-restarts=$max_restarts)"
  fi
}
# Waits grow after each failure, up to --max-backoff.
back_off() {
  delay=$(awk -v d="$delay" -v cap="$max_backoff" 'BEGIN { d *= 2; print (d > cap ? cap : d) }')
}
# Starts the run on every worker: the leftovers ended and the TPU freed first.
start_run() {
  script stop.sh --free --grace="$grace" || { note "freeing the TPU failed"; return 1; }
  script run.sh
}
# On a new slice: copies the code, sets it up where the venv is missing, starts the run.
start_fresh() {
  script copy_code.sh && {
    ssh_all "test -x ~/$REMOTE_VENV/bin/python" >/dev/null 2>&1 || script setup.sh
  } && start_run
}
# Creates the slice; a create.sh that refuses its settings (exit 2) ends the watch, any
# other failure (a stockout, a gcloud error) is waited out under --wait-limit.
create() {
  script create.sh || {
    local status=$?
    ((status != 2)) || finish 2 "create.sh refused the settings (see above); fix the env file"
    note "create.sh failed (no capacity?)"
    back_off
  }
}
# Replaces the slice: a lost one, or one in an unknown state or with a worker that does not
# answer past --unknown-limit. The event spends a restart, once (see handled).
recreate() {
  ((recreating || handled)) || account restart
  recreating=1 handled=0 unknown_since=""
  [[ $1 == MISSING ]] || script delete.sh --yes || true
  create
}
# Starts (start_fresh or start_run); a failed start is retried under --wait-limit (ssh and
# scp errors are passing), spending no budget; a refusal (exit 2) ends the watch.
try_start() {
  local status=0
  "$@" || status=$?
  if ((status == 0)); then
    handled=0 start_failing_since=""
    return
  fi
  ((status != 2)) || finish 2 "launch/run.sh refused to start the run (see above); fix the config or env file"
  start_failing_since=${start_failing_since:-$SECONDS}
  ((SECONDS - start_failing_since < ${wait_limit%.*})) ||
    finish 1 "gave up: starting the run failed for --wait-limit=$wait_limit s"
  note "starting the run failed; trying again"
  back_off
}
# A wait that spends no budget: ends the watch once it has lasted --wait-limit.
wait_limited() {
  waiting_since=${waiting_since:-$SECONDS}
  ((SECONDS - waiting_since < ${wait_limit%.*})) ||
    finish 1 "gave up: $1 for --wait-limit=$wait_limit s"
}
# An unknown state or a worker that does not answer: waited on for --unknown-limit, then
# the slice is replaced.
wait_unknown() {
  unknown_since=${unknown_since:-$SECONDS}
  note "$1 ($((SECONDS - unknown_since)) s)"
  if ((SECONDS - unknown_since >= ${unknown_limit%.*})); then
    note "waited --unknown-limit=$unknown_limit s; re-creating $TPU_NAME"
    recreate "$state"
  fi
}
# Wall clocks of the bounded waits (bash's SECONDS), empty when not waiting.
waiting_since="" unknown_since="" start_failing_since="" hang_since="" hang_step=-1
recreating=1  # bringing a slice up: a missing one is created, spending no budget
handled=0     # the last ended run (or lost slice) is accounted; its restart has not started

while :; do
  state=$(node_state)
  outcome=$(node_outcome "$state")
  status=""
  if [[ $outcome == ready ]]; then
    recreating=0
    status=$(run_status)
    # No worker answered: the trouble is more likely on this side (ssh, network): wait.
    [[ $status != silent ]] || outcome=waiting
  fi
  [[ $state == GCLOUD_ERROR ]] && outcome=waiting
  [[ $outcome == waiting || ($outcome == lost && $recreating == 1) ]] || waiting_since=""
  [[ $outcome == unknown || $status == unreachable ]] || unknown_since=""
  [[ $status == running ]] || hang_since=""
  case $outcome in
    ready)
      case $status in
        running)
          delay=$every
          if [[ $hang_limit != 0 ]]; then
            step=$(newest_step)
            if [[ -z $hang_since ]] || ((step > hang_step)); then
              hang_step=$step hang_since=$SECONDS
            elif ((SECONDS - hang_since >= ${hang_limit%.*})); then
              note "no new checkpoint for --hang-limit=$hang_limit s while running: hung"
              hang_since=""
              account crash
              try_start start_run
            fi
          fi
          ;;
        unreachable) wait_unknown "a worker of $TPU_NAME does not answer" ;;
        none)  # a new slice (or all its hosts restarted): no run on it yet
          note "no run on $TPU_NAME; starting it"
          try_start start_fresh
          ;;
        *)
          outcome=$(run_outcome "$status")
          case $outcome in
            done) finish 0 "the run finished" ;;
            refused) finish 2 "the run stopped on a bad config or checkpoint (exit status 2); see launch/logs.sh" ;;
          esac
          if ((!handled)); then
            account "$outcome"
            handled=1
            save_logs
          fi
          if [[ $outcome == crash ]]; then
            note "the run crashed (status $status); starting it again ($crashes of --crash-budget=$crash_budget)"
          else
            note "the run stopped (status $status); starting it again"
          fi
          try_start start_run
          back_off
          ;;
      esac
      ;;
    lost)
      if ((recreating)); then  # a re-create that did not take yet: waiting for capacity
        wait_limited "no $ACCELERATOR_TYPE"
        note "$TPU_NAME is $state; creating it again (waiting $((SECONDS - waiting_since)) s)"
      else
        note "$TPU_NAME is $state; creating it again"
      fi
      recreate "$state"
      ;;
    waiting)
      wait_limited "$TPU_NAME stayed $state"
      back_off
      ;;
    unknown) wait_unknown "$TPU_NAME is $state" ;;
  esac
  sleep "$delay"
done
