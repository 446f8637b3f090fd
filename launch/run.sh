#!/usr/bin/env bash
# Starts training on every TPU worker at once, in the background, logging to a file.
#
#   launch/run.sh [--dry-run] [ENV_FILE]
#
# Each worker runs, from ~/REMOTE_DIR and detached from the ssh session (nohup):
#   MPL_DISTRIBUTED=always ~/REMOTE_VENV/bin/python main.py --config=CONFIG
#       --workdir=WORKDIR EXTRA_ARGS...  >> ~/LOG_FILE
# and writes its process id to ~/LOG_FILE with .pid for .log. WORKDIR must be gs://: every
# worker reads and writes the same checkpoints. A worker whose previous run is still alive
# refuses to start a second one. Rerunning after a stop or preemption resumes from the
# newest checkpoint in WORKDIR.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage() { sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options
load_tpu_env
require CONFIG WORKDIR
[[ $WORKDIR == gs://?* ]] || die "WORKDIR=$WORKDIR must be a gs:// path that every worker can reach"
extra_args
# ~ stays bare (unquoted) so that it expands on the worker; REMOTE_VENV is checked safe.
train="$(join_quoted env MPL_DISTRIBUTED="${MPL_DISTRIBUTED:-always}" TF_CPP_MIN_LOG_LEVEL=2) \
~/$REMOTE_VENV/bin/python $(join_quoted main.py --config="$CONFIG" --workdir="$WORKDIR" \
  ${EXTRA[@]+"${EXTRA[@]}"})"
# shellcheck disable=SC2088  # ~ is for the worker's shell
pid_file="~/${LOG_FILE%.log}.pid"
tpu_ssh all "cd ~/$REMOTE_DIR || exit 1; if [ -f $pid_file ] && kill -0 \$(cat $pid_file) 2>/dev/null; then echo \"error: a run is still going on \$(hostname); launch/stop.sh ends it\" >&2; exit 1; fi; echo \"=== \$(date -u +%FT%TZ) revision \$(cat REVISION 2>/dev/null) on \$(hostname)\" >> ~/$LOG_FILE; nohup $train >> ~/$LOG_FILE 2>&1 < /dev/null & echo \$! > $pid_file"
