#!/usr/bin/env bash
# Submits training to a SLURM GPU cluster: sbatch, then srun of main.py on every node.
#
#   launch/slurm.sh [--dry-run] [ENV_FILE]
#
# Uses CONFIG, WORKDIR (on a file system every node mounts, or gs://), NODES,
# GPUS_PER_NODE, TASKS (node: one process per node seeing all its GPUs; gpu: one process
# per GPU) and optionally PARTITION, ACCOUNT, TIME, JOB_NAME, SLURM_LOG_DIR, PYTHON,
# SLURM_SETUP (a shell line run before srun, e.g. module load or venv activation),
# CPUS_PER_GPU (default 8: cores for each task's input pipeline, per GPU it drives),
# SIGNAL_LEAD (default 300: seconds before the time limit at which the tasks get SIGTERM
# and save a checkpoint), MAX_REQUEUES (default 50), REVISION (default HEAD),
# SLURM_CODE_DIR and EXTRA_ARGS.
# The job runs the committed files of REVISION, unpacked once into SLURM_CODE_DIR/<commit>
# (default launch/slurm_code/<commit>), with a copy of the env file made at submission
# (<commit>/submitted/<its git hash>.env): later edits or checkouts change neither the
# code, nor launch/lib.sh, nor the settings of a queued, running or requeued job. The job
# runs that commit's launch/slurm.sh (with --in-job); each task's main.py finds the others
# through SLURM's variables (mpl_jax/distributed.py) and writes its exit status to a file.
# The job decides from every task's status and srun's by the restart policy of
# launch/README.md: a task stopped by the time-limit signal or a preemption (75 after its
# checkpoint, or killed by a signal) and none crashed: the job requeues itself (scontrol
# requeue; it is submitted with --requeue and appends to its log) and resumes from the
# newest checkpoint in WORKDIR, at most MAX_REQUEUES times.
# --dry-run prints the sbatch command and the srun command each job will run.
if [[ " $* " == *" --in-job "* ]]; then
  LAUNCH_DIR=${MPL_LAUNCH_DIR:-$PWD/launch}  # sbatch runs a copy of this file
fi
source "${LAUNCH_DIR:-$(dirname "${BASH_SOURCE[0]}")}/lib.sh"
usage() { sed -n '2,29s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options --in-job
in_job=$(option_value --in-job 0)
load_env
require CONFIG WORKDIR NODES GPUS_PER_NODE
TASKS=${TASKS:-node}
[[ $NODES =~ ^[1-9][0-9]*$ ]] || die "NODES=$NODES must be a positive number"
[[ $GPUS_PER_NODE =~ ^[1-9][0-9]*$ ]] || die "GPUS_PER_NODE=$GPUS_PER_NODE must be a positive number"
CPUS_PER_GPU=${CPUS_PER_GPU:-8}
SIGNAL_LEAD=${SIGNAL_LEAD:-300}
MAX_REQUEUES=${MAX_REQUEUES:-50}
[[ $MAX_REQUEUES =~ ^[0-9]+$ ]] || die "MAX_REQUEUES=$MAX_REQUEUES must be a whole number"
[[ $CPUS_PER_GPU =~ ^[1-9][0-9]*$ ]] || die "CPUS_PER_GPU=$CPUS_PER_GPU must be a positive number"
[[ $SIGNAL_LEAD =~ ^[1-9][0-9]*$ ]] || die "SIGNAL_LEAD=$SIGNAL_LEAD must be a positive number of seconds"
case $TASKS in
  node) tasks_per_node=1 cpus_per_task=$((CPUS_PER_GPU * GPUS_PER_NODE)) ;;
  gpu) tasks_per_node=$GPUS_PER_NODE cpus_per_task=$CPUS_PER_GPU ;;
  *) die "TASKS=$TASKS must be node or gpu" ;;
esac
extra_args

# What each task runs. One task per node: JAX must see all the node's GPUs (its SLURM
# default is the one GPU numbered SLURM_LOCALID). One per GPU: that default is right.
task_env=(MPL_DISTRIBUTED="${MPL_DISTRIBUTED:-auto}" TF_CPP_MIN_LOG_LEVEL=2)
if [[ $TASKS == node ]]; then
  device_ids=0
  for ((i = 1; i < GPUS_PER_NODE; i++)); do device_ids+=",$i"; done
  task_env+=(JAX_LOCAL_DEVICE_IDS="$device_ids")
fi
# SRUN: the job's srun command; each task's exit status lands in $1/<task id> (lib.sh's
# STATUS_WRAPPER). --cpus-per-task: srun no longer takes it from sbatch (Slurm 22.05).
srun_command() {
  SRUN=(srun --kill-on-bad-exit=1 --cpus-per-task="$cpus_per_task" bash -c "$STATUS_WRAPPER"
    task "$1/%t" env "${task_env[@]}" "${PYTHON:-python3}" main.py --config="$CONFIG"
    --workdir="$WORKDIR" ${EXTRA[@]+"${EXTRA[@]}"})
}

if [[ $in_job == 1 ]]; then
  if [[ -n ${SLURM_SETUP:-} ]]; then
    if ((DRY_RUN)); then echo "$SLURM_SETUP"; else eval "$SLURM_SETUP"; fi
  fi
  echo "=== $(date -u +%FT%TZ) job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) revision $(cat REVISION 2>/dev/null)" >&2
  status_dir=$PWD/.task_status/${SLURM_JOB_ID:-0}.${SLURM_RESTART_COUNT:-0}
  srun_command "$status_dir"
  ((DRY_RUN)) || mkdir -p "$status_dir"
  status=0
  run "${SRUN[@]}" || status=$?
  ((DRY_RUN)) && exit 0
  # The tasks' statuses with srun's (a task killed by --kill-on-bad-exit writes none).
  statuses=("$status")
  for file in "$status_dir"/*; do
    [[ -f $file ]] && statuses+=("$(cat "$file")")
  done
  outcome=$(run_outcome "$(slice_status "${statuses[@]}")")
  echo "=== srun exited $status; the tasks: ${statuses[*]:1}; the job: $outcome" >&2
  if [[ $outcome == restart ]]; then  # stopped after a checkpoint: go on later
    if ((${SLURM_RESTART_COUNT:-0} >= MAX_REQUEUES)); then
      die "requeued $MAX_REQUEUES times (MAX_REQUEUES); not again"
    fi
    run scontrol requeue "$SLURM_JOB_ID"
    exit 0
  fi
  exit "$status"
fi

env_file=$(cd "$(dirname "$ENV_FILE")" && pwd)/$(basename "$ENV_FILE")
log_dir=${SLURM_LOG_DIR:-$LAUNCH_DIR/slurm_logs}
commit=$(git -C "$REPO_ROOT" rev-parse --verify --quiet "${REVISION:-HEAD}^{commit}") ||
  die "REVISION=${REVISION:-HEAD} is not a commit of $REPO_ROOT"
code_root=${SLURM_CODE_DIR:-$LAUNCH_DIR/slurm_code}
[[ $code_root == /* ]] || code_root=$PWD/$code_root  # the job reads it from its own --chdir
code_dir=$code_root/$commit
frozen_env=$code_dir/submitted/$(git hash-object "$env_file").env
# shellcheck disable=SC2054  # --export takes a comma-separated list
sbatch_options=(--job-name="${JOB_NAME:-mpl_jax}" --nodes="$NODES"
  --ntasks-per-node="$tasks_per_node" --gpus-per-node="$GPUS_PER_NODE"
  --cpus-per-task="$cpus_per_task" --signal=TERM@"$SIGNAL_LEAD" --requeue
  --open-mode=append --output="$log_dir/%x-%j.out" --chdir="$code_dir"
  --export=ALL,MPL_LAUNCH_DIR="$code_dir/launch")
[[ -n ${PARTITION:-} ]] && sbatch_options+=(--partition="$PARTITION")
[[ -n ${ACCOUNT:-} ]] && sbatch_options+=(--account="$ACCOUNT")
[[ -n ${TIME:-} ]] && sbatch_options+=(--time="$TIME")
run mkdir -p "$log_dir"
if [[ ! -f $code_dir/REVISION ]]; then  # unpacked once; a partial copy is unpacked again
  run rm -rf "$code_dir"
  run mkdir -p "$code_dir"
  if ((DRY_RUN)); then
    echo "git -C $(quote "$REPO_ROOT") archive $commit | tar -x -C $(quote "$code_dir")"
  else
    git -C "$REPO_ROOT" archive "$commit" | tar -x -C "$code_dir"
  fi
  if ((DRY_RUN)); then echo "echo $commit > $(quote "$code_dir/REVISION")"; else echo "$commit" >"$code_dir/REVISION"; fi
fi
run mkdir -p "$code_dir/submitted"
run cp "$env_file" "$frozen_env"
run sbatch "${sbatch_options[@]}" "$code_dir/launch/slurm.sh" --in-job "$frozen_env"
if ((DRY_RUN)); then
  echo "# each job then runs, from $code_dir:"
  [[ -z ${SLURM_SETUP:-} ]] || echo "$SLURM_SETUP"
  srun_command "$code_dir/.task_status/<job id>.<restart>"
  join_quoted "${SRUN[@]}"
  echo
else
  echo "log: $log_dir/${JOB_NAME:-mpl_jax}-<job id>.out (squeue --me shows the job)" >&2
fi
