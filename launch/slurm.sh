#!/usr/bin/env bash
# Submits training to a SLURM GPU cluster: sbatch, then srun of main.py on every node.
#
#   launch/slurm.sh [--dry-run] [ENV_FILE]
#
# Uses CONFIG, WORKDIR (on a file system every node mounts, or gs://), NODES,
# GPUS_PER_NODE, TASKS (node: one process per node seeing all its GPUs; gpu: one process
# per GPU) and optionally PARTITION, ACCOUNT, TIME, JOB_NAME, SLURM_LOG_DIR, PYTHON,
# SLURM_SETUP (a shell line run before srun, e.g. module load or venv activation) and
# EXTRA_ARGS. The job runs this script again (with --in-job) from the repository root;
# each task's main.py finds the others through SLURM's variables (mpl_jax/distributed.py).
# --dry-run prints the sbatch command and the srun command each job will run.
if [[ " $* " == *" --in-job "* ]]; then
  LAUNCH_DIR=$PWD/launch  # sbatch runs a copy of this file; the job starts in the repo
fi
source "${LAUNCH_DIR:-$(dirname "${BASH_SOURCE[0]}")}/lib.sh"
usage() { sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options --in-job
in_job=$(option_value --in-job 0)
load_env
require CONFIG WORKDIR NODES GPUS_PER_NODE
TASKS=${TASKS:-node}
[[ $NODES =~ ^[1-9][0-9]*$ ]] || die "NODES=$NODES must be a positive number"
[[ $GPUS_PER_NODE =~ ^[1-9][0-9]*$ ]] || die "GPUS_PER_NODE=$GPUS_PER_NODE must be a positive number"
case $TASKS in
  node) tasks_per_node=1 ;;
  gpu) tasks_per_node=$GPUS_PER_NODE ;;
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
srun_command=(srun --kill-on-bad-exit=1 env "${task_env[@]}" "${PYTHON:-python3}" main.py
  --config="$CONFIG" --workdir="$WORKDIR" ${EXTRA[@]+"${EXTRA[@]}"})

if [[ $in_job == 1 ]]; then
  if [[ -n ${SLURM_SETUP:-} ]]; then
    if ((DRY_RUN)); then echo "$SLURM_SETUP"; else eval "$SLURM_SETUP"; fi
  fi
  run "${srun_command[@]}"
  exit
fi

env_file=$(cd "$(dirname "$ENV_FILE")" && pwd)/$(basename "$ENV_FILE")
log_dir=${SLURM_LOG_DIR:-$LAUNCH_DIR/slurm_logs}
sbatch_options=(--job-name="${JOB_NAME:-mpl_jax}" --nodes="$NODES"
  --ntasks-per-node="$tasks_per_node" --gpus-per-node="$GPUS_PER_NODE"
  --output="$log_dir/%x-%j.out" --chdir="$REPO_ROOT")
[[ -n ${PARTITION:-} ]] && sbatch_options+=(--partition="$PARTITION")
[[ -n ${ACCOUNT:-} ]] && sbatch_options+=(--account="$ACCOUNT")
[[ -n ${TIME:-} ]] && sbatch_options+=(--time="$TIME")
run mkdir -p "$log_dir"
run sbatch "${sbatch_options[@]}" "$LAUNCH_DIR/slurm.sh" --in-job "$env_file"
if ((DRY_RUN)); then
  echo "# each job then runs, from $REPO_ROOT:"
  [[ -z ${SLURM_SETUP:-} ]] || echo "$SLURM_SETUP"
  join_quoted "${srun_command[@]}"
  echo
else
  echo "log: $log_dir/${JOB_NAME:-mpl_jax}-<job id>.out (squeue --me shows the job)" >&2
fi
