#!/usr/bin/env bash
# Starts training on every TPU worker at once, in the background, logging to a file.
#
#   launch/run.sh [--dry-run] [ENV_FILE]
#
# Each worker runs, from ~/REMOTE_DIR and detached from the ssh session (nohup):
#   MPL_DISTRIBUTED=always ~/REMOTE_VENV/bin/python main.py --config=CONFIG
#       --workdir=WORKDIR EXTRA_ARGS...  >> ~/LOG_FILE
# under a small wrapper that passes SIGTERM on to it and writes its exit status to
# ~/LOG_FILE with .exit for .log (0 finished, 75 preempted after a checkpoint, anything
# else failed; launch/watch.sh reads it), and writes the wrapper's process id to .pid.
# JAX_COMPILATION_CACHE_DIR is COMPILATION_CACHE (default WORKDIR/compilation_cache), so
# a restarted run loads its compiled step instead of compiling it again. WORKDIR must be
# gs://: every worker reads and writes the same checkpoints. LIBTPU_INIT_ARGS and XLA_FLAGS,
# where the env file sets them, and the variables it names in WORKER_ENV reach main.py.
# Each run is a process group of its own (setsid), which launch/free_tpu.sh ends whole.
# A worker whose previous run is still alive refuses to start a second one. Rerunning
# after a stop or preemption resumes from the newest checkpoint in WORKDIR. First, worker 0 checks the config for a
# run over all the slice's hosts (main.py --preflight_hosts): a bad field, or a data set
# not on gs:// (data.data_dir) for a multi-host slice, stops here with exit status 2 and
# nothing started.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage() { sed -n '2,22s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options
load_tpu_env
require CONFIG WORKDIR ACCELERATOR_TYPE
[[ $WORKDIR == gs://?* ]] || die "WORKDIR=$WORKDIR must be a gs:// path that every worker can reach"
extra_args
# The env file's settings that main.py on the workers gets, as NAME=value words.
worker_env=()
for name in LIBTPU_INIT_ARGS XLA_FLAGS ${WORKER_ENV:-}; do
  [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "WORKER_ENV names $name, which is not a variable name"
  [[ -z ${!name+set} ]] || worker_env+=("$name=${!name}")
done
hosts=$(tpu_hosts)
# shellcheck disable=SC2088  # ~ is for the worker's shell
check="~/$REMOTE_VENV/bin/python $(join_quoted main.py --preflight_hosts="$hosts" \
  --config="$CONFIG" --workdir="$WORKDIR" ${EXTRA[@]+"${EXTRA[@]}"})"
tpu_ssh 0 "cd ~/$REMOTE_DIR && TF_CPP_MIN_LOG_LEVEL=2 $check" || {
  status=$?
  ((status == 2)) && die "the config cannot run on $ACCELERATOR_TYPE (see above); nothing was started"
  exit $status
}
CACHE=${COMPILATION_CACHE:-${WORKDIR%/}/compilation_cache}
# ~ stays bare (unquoted) so that it expands on the worker; REMOTE_VENV is checked safe.
train="$(join_quoted bash -c "$STATUS_WRAPPER" run "${LOG_FILE%.log}.exit" env \
  MPL_DISTRIBUTED="${MPL_DISTRIBUTED:-always}" TF_CPP_MIN_LOG_LEVEL=2 \
  JAX_COMPILATION_CACHE_DIR="$CACHE" ${worker_env[@]+"${worker_env[@]}"}) \
~/$REMOTE_VENV/bin/python $(join_quoted main.py --config="$CONFIG" --workdir="$WORKDIR" \
  ${EXTRA[@]+"${EXTRA[@]}"})"
# shellcheck disable=SC2088  # ~ is for the worker's shell
pid_file="~/${LOG_FILE%.log}.pid"
tpu_ssh all "cd ~/$REMOTE_DIR || exit 1; if [ -f $pid_file ] && kill -0 \$(cat $pid_file) 2>/dev/null; then echo \"error: a run is still going on \$(hostname); launch/stop.sh ends it\" >&2; exit 1; fi; echo \"=== \$(date -u +%FT%TZ) revision \$(cat REVISION 2>/dev/null) on \$(hostname)\" >> ~/$LOG_FILE; nohup setsid $train >> ~/$LOG_FILE 2>&1 < /dev/null & echo \$! > $pid_file"
