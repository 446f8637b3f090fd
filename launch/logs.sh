#!/usr/bin/env bash
# Follows the training log of worker 0 (or of another worker, or of all of them).
#
#   launch/logs.sh [--dry-run] [--worker=0|N|all] [--lines=100] [--no-follow] [ENV_FILE]
#
# Worker 0 writes the metrics and evaluations; the others mostly start-up lines and
# errors. With --worker=all the workers' lines are interleaved. Ctrl-C stops following;
# the run goes on.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage() { sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options --worker --lines --no-follow
load_tpu_env
worker=$(option_value --worker 0)
lines=$(option_value --lines 100)
[[ $worker =~ ^([0-9]+|all)$ ]] || die "--worker=$worker must be a worker number or all"
[[ $lines =~ ^[0-9]+$ ]] || die "--lines=$lines must be a number"
follow=" -F"
[[ $(option_value --no-follow 0) == 1 ]] && follow=""
tpu_ssh "$worker" "tail -n $lines$follow ~/$LOG_FILE"
