#!/usr/bin/env bash
# Keeps a Cloud TPU run going until it finishes, with no one at the keyboard.
#
#   launch/watch.sh [--dry-run] [--every=SECONDS] [--max-restarts=N] [ENV_FILE]
#
# Run it where it can stay up (Cloud Shell in tmux, a small VM) after launch/run.sh, or
# instead of steps 3 to 6 of launch/README.md. Every SECONDS (default 120) it asks gcloud
# for the TPU VM's state (the queued request's with QUEUED=yes) and worker 0 for the run's:
# - TPU VM preempted, stopped, failed or gone: deletes what is left and creates it again;
# - TPU VM ready and no run there yet (new, or its host restarted): copies the code, sets
#   it up (only where the venv is missing) and starts the run;
# - TPU VM ready, run ended: exit status 0 means finished (watch.sh exits 0); 2 is a
#   bad config or checkpoint (exits 2: a restart cannot help); anything else (75: stopped
#   by a preemption or maintenance SIGTERM after a checkpoint) starts it again with
#   launch/run.sh, which resumes from the newest checkpoint in WORKDIR and finds the
#   compiled step in its compilation cache. run.sh refusing the config (exit status 2)
#   stops the watcher too.
# After N restarts (default 20) it gives up with an error. Ctrl-C stops watching, not the
# run; stop the watcher before launch/stop.sh, or it starts the run again.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage() { sed -n '2,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options --every --max-restarts
load_tpu_env
require ACCELERATOR_TYPE RUNTIME_VERSION CONFIG WORKDIR
every=$(option_value --every 120)
max_restarts=$(option_value --max-restarts 20)
[[ $every =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--every=$every must be a number of seconds"
[[ $max_restarts =~ ^[0-9]+$ ]] || die "--max-restarts=$max_restarts must be a whole number"
env_file=$(cd "$(dirname "$ENV_FILE")" && pwd)/$(basename "$ENV_FILE")
pid_file="~/${LOG_FILE%.log}.pid"    # for the worker's shell
exit_file="~/${LOG_FILE%.log}.exit"

if [[ $QUEUED == yes ]]; then
  state_command=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${GCLOUD_TARGET[@]}"
    '--format=value(state.state)')
else
  state_command=(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_TARGET[@]}"
    '--format=value(state)')
fi
run_state="if [ -f $exit_file ]; then cat $exit_file; elif [ -f $pid_file ] && kill -0 \$(cat $pid_file) 2>/dev/null; then echo running; else echo none; fi"

if ((DRY_RUN)); then
  echo "# every $every s: the TPU VM's state, and the run's on worker 0:"
  join_quoted "${state_command[@]}"; echo
  join_quoted gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_TARGET[@]}" --worker=0 \
    --command="$run_state"; echo
  echo "# preempted, stopped, failed or gone:"
  echo "$LAUNCH_DIR/delete.sh --yes $env_file"
  echo "$LAUNCH_DIR/create.sh $env_file"
  echo "# ready, no run yet (setup.sh only where the venv is missing):"
  for script in copy_code.sh setup.sh run.sh; do echo "$LAUNCH_DIR/$script $env_file"; done
  echo "# ready, run ended unfinished:"
  echo "$LAUNCH_DIR/run.sh $env_file"
  exit 0
fi

note() { echo "[watch $(date -u +%FT%TZ)] $*" >&2; }
script() { bash "$LAUNCH_DIR/$1" "${@:2}" "$env_file" >&2; }
# Copies the code, sets it up where the venv is missing, starts the run.
start_fresh() {
  script copy_code.sh && {
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_TARGET[@]}" --worker=all \
      --command="test -x ~/$REMOTE_VENV/bin/python" >/dev/null 2>&1 || script setup.sh
  } && script run.sh
}
# After a failed start: exit status 2 is a refusal (the config cannot run on this slice:
# launch/run.sh's check) that no retry mends; anything else is tried again.
refused_or_retry() {
  local status=$?
  ((status != 2)) || die "launch/run.sh refused to start the run (see above); fix the config or env file"
  note "$1; trying again in $every s"
}
restarts=0
count_restart() {
  restarts=$((restarts + 1))
  ((restarts <= max_restarts)) || die "gave up after $max_restarts restarts (--max-restarts)"
}

while :; do
  state=$("${state_command[@]}" 2>/dev/null) || state=MISSING
  state=${state:-MISSING}
  case $state in
    READY | ACTIVE)
      status=$(gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_TARGET[@]}" --worker=0 \
        --command="$run_state" 2>/dev/null | tail -n 1) || status=unreachable
      case $status in
        running | unreachable) ;;
        0) note "the run finished"; exit 0 ;;
        2) die "the run stopped on a bad config or checkpoint (exit status 2); see launch/logs.sh" ;;
        none)  # never started here (a new TPU VM or request), or its host restarted
          count_restart
          note "no run on $TPU_NAME; starting it ($restarts)"
          start_fresh || refused_or_retry "starting the run failed"
          ;;
        *)
          count_restart
          note "the run ended unfinished (status $status); starting it again ($restarts)"
          script run.sh || refused_or_retry "run.sh failed"
          ;;
      esac
      ;;
    PREEMPTED | TERMINATED | STOPPED | STOPPING | SUSPENDED | SUSPENDING | FAILED | MISSING)
      count_restart
      note "TPU VM $TPU_NAME is $state; creating it again ($restarts)"
      if [[ $state != MISSING ]]; then script delete.sh --yes || true; fi
      # The run starts at the next check that finds the TPU VM ready (no run there yet).
      script create.sh || note "create.sh failed; trying again in $every s"
      ;;
    *) ;;  # creating, starting, restarting, waiting for resources: wait
  esac
  sleep "$every"
done
