# shellcheck shell=bash
# Shared by the launch scripts (sourced, not run): options, the env file, checks, dry-run.
#
# Every script takes [--dry-run] [its own options] [ENV_FILE]; ENV_FILE defaults to
# launch/env. With --dry-run the commands are printed, one per line and quoted for a
# POSIX shell, and nothing is run. Written for bash 3.2 (macOS) and later.

set -euo pipefail

LAUNCH_DIR=${LAUNCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
# shellcheck disable=SC2034  # used by the scripts that source this file
REPO_ROOT=$(dirname "$LAUNCH_DIR")
DRY_RUN=0
ENV_FILE=""
OPTIONS=()  # the script's own --options, for it to read

die() {
  echo "error: $*" >&2
  exit 2
}

# Splits the command line into --dry-run, the script's own options and the env file.
parse_args() {
  local arg
  for arg in "$@"; do
    case $arg in
      --dry-run) DRY_RUN=1 ;;
      -h | --help) usage; exit 0 ;;
      -*) OPTIONS+=("$arg") ;;
      *)
        [[ -z $ENV_FILE ]] || die "more than one env file: $ENV_FILE and $arg"
        ENV_FILE=$arg
        ;;
    esac
  done
}

# Fails on an option this script does not take; the arguments are the ones it does.
check_options() {
  local option known ok
  for option in ${OPTIONS[@]+"${OPTIONS[@]}"}; do
    ok=0
    for known in "$@"; do
      [[ ${option%%=*} == "$known" ]] && ok=1
    done
    ((ok)) || die "unknown option $option; valid: $(join_quoted --dry-run "$@")"
  done
}

# The value of --name=VALUE among the script's options, or the default.
option_value() {
  local name=$1 default=$2 option value=$2
  for option in ${OPTIONS[@]+"${OPTIONS[@]}"}; do
    [[ $option == "$name="* ]] && value=${option#*=}
    [[ $option == "$name" ]] && value=1
  done
  printf '%s' "${value:-$default}"
}

load_env() {
  ENV_FILE=${ENV_FILE:-$LAUNCH_DIR/env}
  [[ -f $ENV_FILE ]] || die "env file $ENV_FILE not found; copy launch/env.example there and fill it in"
  set -a
  # shellcheck disable=SC1090
  source "$ENV_FILE"
  set +a
}

# Fails with one line naming the first variable that is unset or empty.
require() {
  local name
  for name in "$@"; do
    [[ -n ${!name:-} ]] || die "$name is not set in $ENV_FILE (see launch/env.example)"
  done
}

# One word as a POSIX shell reads it back: bare when safe, else in single quotes (only
# the value of a --flag=value or NAME=value word, for legibility).
quote() {
  local safe='^[A-Za-z0-9_./:=@%+,-]+$' assignment='^(--?[A-Za-z0-9_.-]+=|[A-Za-z_][A-Za-z0-9_]*=)(.*)$'
  if [[ $1 =~ $safe ]]; then
    printf '%s' "$1"
  elif [[ $1 =~ $assignment ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    quote "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${1//"'"/"'\\''"}"
  fi
}

# The words as one command line.
join_quoted() {
  local line="" word
  for word in "$@"; do
    line+="${line:+ }$(quote "$word")"
  done
  printf '%s' "$line"
}

# Runs a command, or with --dry-run prints it (stdout, one line) instead.
run() {
  if ((DRY_RUN)); then
    join_quoted "$@"
    echo
  else
    echo "+ $(join_quoted "$@")" >&2
    "$@"
  fi
}

# shellcheck disable=SC2034  # WORDS is read by the scripts that source this file
# WORDS: the words of the named variable (a bash array in the env file, or a plain string
# split on spaces).
split_words() {
  local name=$1 copy
  WORDS=()
  if declare -p "$name" 2>/dev/null | grep -q '^declare -a'; then
    copy="${name}[@]"
    WORDS=(${!copy+"${!copy}"})
  elif [[ -n ${!name:-} ]]; then
    read -r -a WORDS <<<"${!name}"
  fi
}

# shellcheck disable=SC2034  # EXTRA is read by the scripts that source this file
# Words of EXTRA_ARGS, main.py's further flags.
extra_args() {
  split_words EXTRA_ARGS
  EXTRA=(${WORDS[@]+"${WORDS[@]}"})
}

# --- Cloud TPU -------------------------------------------------------------------------

load_tpu_env() {
  load_env
  require PROJECT ZONE TPU_NAME
  QUEUED=${QUEUED:-no}
  case $QUEUED in
    yes | no) ;;
    *) die "QUEUED=$QUEUED must be yes or no" ;;
  esac
  REMOTE_DIR=${REMOTE_DIR:-mpl_jax}
  REMOTE_VENV=${REMOTE_VENV:-mpl_venv}
  LOG_FILE=${LOG_FILE:-mpl_jax.log}
  local path
  for path in REMOTE_DIR REMOTE_VENV LOG_FILE; do
    [[ ${!path} =~ ^[A-Za-z0-9_][A-Za-z0-9_./-]*$ && ${!path} != *..* ]] ||
      die "$path=${!path} must be a path under the workers' home directory (letters, digits, _ . - /)"
  done
  GCLOUD_TARGET=(--project="$PROJECT" --zone="$ZONE")
}

# The number of hosts (workers) of ACCELERATOR_TYPE: v2, v3, v4 and v5p count TensorCores
# (8 to a host), v5e and v6e count chips (up to 8 on one host, else 4 to a host).
tpu_hosts() {
  local n=${ACCELERATOR_TYPE##*-}
  [[ $n =~ ^[0-9]+$ ]] || die "ACCELERATOR_TYPE=$ACCELERATOR_TYPE must end in its size (v4-32, v5litepod-16, ...)"
  case $ACCELERATOR_TYPE in
    v5litepod-* | v5e-* | v6e-*) ((n <= 8)) && echo 1 || echo $((n / 4)) ;;
    *) ((n <= 8)) && echo 1 || echo $((n / 8)) ;;
  esac
}

# gcloud compute tpus tpu-vm ssh on the given worker(s), running one shell command there.
# Host keys are not checked: a re-created TPU VM has new ones under the same addresses.
tpu_ssh() {
  local worker=$1 command=$2
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_TARGET[@]}" \
    --strict-host-key-checking=no --worker="$worker" --command="$command"
}

# A program for bash -c: runs "$@" after its first argument FILE, passes SIGTERM and
# SIGINT on to it, writes its exit status to FILE and exits with it. A relative FILE is
# under $HOME; %t in FILE is the task's SLURM_PROCID (0 outside SLURM), as in srun's
# file names. run.sh and slurm.sh run training under it, so that a supervisor reads each
# process's own status.
# shellcheck disable=SC2016,SC2034  # expanded by the bash that runs it; used by run.sh, slurm.sh
STATUS_WRAPPER='f=$1; shift; case $f in /*) ;; *) f=$HOME/$f ;; esac; f=${f//%t/${SLURM_PROCID:-0}}; rm -f "$f"; "$@" & c=$!; trap "kill -TERM $c 2>/dev/null" TERM INT; while kill -0 $c 2>/dev/null; do wait $c; done; wait $c; s=$?; echo $s > "$f"; exit $s'

# --- Restart policy (launch/README.md, "Restart policy"), one place for every supervisor -

# What a run's exit status asks of a supervisor: done, refused (a bad config or
# checkpoint: no restart mends it), restart (75: stopped after a checkpoint; 128 and above:
# killed by a signal from outside, as by a preemption) or crash (anything else: a bug, out
# of memory; and the signals a process raises on itself: SIGILL 132, SIGABRT 134 (a
# failed CHECK), SIGBUS 135, SIGFPE 136, SIGSEGV 139).
run_outcome() {
  local status=$1
  case $status in
    0) echo "done" ;;
    2) echo refused ;;
    75) echo restart ;;
    132 | 134 | 135 | 136 | 139) echo crash ;;
    *)
      if [[ $status =~ ^[0-9]+$ ]] && ((status >= 128)); then echo restart; else echo crash; fi
      ;;
  esac
}

# What a TPU VM's (or queued request's) state asks: ready (read the run), lost (delete and
# create again), waiting (for capacity, or for gcloud to finish) or unknown (REPAIRING,
# UNKNOWN, a state this table does not name: wait a bounded time, then re-create).
node_outcome() {
  case $1 in
    READY | ACTIVE) echo ready ;;
    PREEMPTED | TERMINATED | STOPPED | STOPPING | SUSPENDED | SUSPENDING | FAILED | MISSING)
      echo lost ;;
    CREATING | STARTING | RESTARTING | PROVISIONING | ACCEPTED | WAITING_FOR_RESOURCES | \
      DELETING) echo waiting ;;
    *) echo unknown ;;
  esac
}

# One status for the whole slice from each worker's (running, none, or an exit status):
# all-or-nothing, so any worker's non-zero status counts. The worst wins: refused, then
# crash, then restart; a worker with no run beside workers with one (its host restarted)
# is a restart, and so are the others' crashes then (they lost a peer); all none is none
# (never started here); all 0 is 0; else running.
slice_status() {
  local status worst="" none=0 finished=0
  for status in "$@"; do
    case $status in
      none) none=$((none + 1)) ;;
      running) ;;
      0) finished=$((finished + 1)) ;;
      *)
        case $(run_outcome "$status") in
          refused) worst=2 ;;
          crash) [[ $worst == 2 ]] || worst=$status ;;
          restart) [[ -n $worst ]] || worst=$status ;;
        esac
        ;;
    esac
  done
  if [[ -n $worst ]] && ! [[ $none -gt 0 && $(run_outcome "$worst") == crash ]]; then
    echo "$worst"
  elif ((none == $#)); then echo none
  elif ((none > 0)); then echo 75
  elif ((finished == $#)); then echo 0
  else echo running
  fi
}
