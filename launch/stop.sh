#!/usr/bin/env bash
# Stops the run on every TPU worker (SIGTERM to the process id run.sh recorded).
#
#   launch/stop.sh [--dry-run] [ENV_FILE]
#
# The training loop takes SIGTERM as a preemption: the workers save a checkpoint at the
# same step and exit; launch/run.sh resumes from it. The TPU VM keeps running (and
# costing) until launch/delete.sh.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage() { sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options
load_tpu_env
# shellcheck disable=SC2088  # ~ is for the worker's shell
pid_file="~/${LOG_FILE%.log}.pid"
tpu_ssh all "if [ -f $pid_file ] && kill -0 \$(cat $pid_file) 2>/dev/null; then kill -TERM \$(cat $pid_file) && echo \"stopping \$(cat $pid_file) on \$(hostname)\"; else echo \"no run on \$(hostname)\"; fi"
