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

# shellcheck disable=SC2034  # EXTRA is read by the scripts that source this file
# Words of EXTRA_ARGS (a bash array in the env file, or a plain string split on spaces).
extra_args() {
  EXTRA=()
  if declare -p EXTRA_ARGS 2>/dev/null | grep -q '^declare -a'; then
    EXTRA=(${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
  elif [[ -n ${EXTRA_ARGS:-} ]]; then
    read -r -a EXTRA <<<"$EXTRA_ARGS"
  fi
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
tpu_ssh() {
  local worker=$1 command=$2
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_TARGET[@]}" --worker="$worker" \
    --command="$command"
}
