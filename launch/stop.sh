#!/usr/bin/env bash
# Stops the run on every TPU worker (SIGTERM to the process id run.sh recorded).
#
#   launch/stop.sh [--dry-run] [--free [--grace=SECONDS]] [ENV_FILE]
#
# The training loop takes SIGTERM as a preemption: the workers save a checkpoint at the
# same step and exit; launch/run.sh resumes from it. The TPU VM keeps running (and
# costing) until launch/delete.sh.
# --free: copies launch/free_tpu.sh to every worker and runs it there: the run's whole
# process group gets SIGTERM, then SIGKILL after --grace seconds (default 30); every
# process still holding the TPU is ended and libtpu's lock file removed. launch/watch.sh
# does this before every start, so that no worker is left out of a restart.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage() { sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options --free --grace
load_tpu_env
grace=$(option_value --grace 30)
[[ $grace =~ ^[0-9]+$ ]] || die "--grace=$grace must be a whole number of seconds"
# shellcheck disable=SC2088  # ~ is for the worker's shell
pid_file="~/${LOG_FILE%.log}.pid"
if [[ $(option_value --free 0) == 1 ]]; then
  run gcloud compute tpus tpu-vm scp "$LAUNCH_DIR/free_tpu.sh" "$TPU_NAME:mpl_free_tpu.sh" \
    "${GCLOUD_TARGET[@]}" --worker=all
  tpu_ssh all "bash ~/mpl_free_tpu.sh $pid_file $grace"
else
  tpu_ssh all "if [ -f $pid_file ] && kill -0 \$(cat $pid_file) 2>/dev/null; then kill -TERM \$(cat $pid_file) && echo \"stopping \$(cat $pid_file) on \$(hostname)\"; else echo \"no run on \$(hostname)\"; fi"
fi
