#!/usr/bin/env bash
# Installs the copied code and its pinned dependencies, with JAX for TPU, on every worker.
#
#   launch/setup.sh [--dry-run] [ENV_FILE]
#
# Run after launch/copy_code.sh (it installs from ~/REMOTE_DIR). Creates the virtual
# environment ~/REMOTE_VENV with WORKER_PYTHON (default python3.11, installed with apt when
# missing; apt waits up to 10 minutes for the package lock, which a re-created TPU VM's own
# updates may hold), then requirements.lock plus jax[tpu] at the same JAX version (libtpu), then
# the project itself (editable: a later copy_code.sh needs no new set-up unless
# requirements.lock changed).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage() { sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options
load_tpu_env
python=${WORKER_PYTHON:-python3.11}
[[ $python =~ ^python3(\.[0-9]+)?$ ]] || die "WORKER_PYTHON=$python must be python3 or python3.N"
# shellcheck disable=SC2088  # ~ is for the worker's shell
pip="~/$REMOTE_VENV/bin/pip"
tpu_ssh all "set -e; cd ~/$REMOTE_DIR; command -v $python >/dev/null || { sudo apt-get -o DPkg::Lock::Timeout=600 update -q && sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q $python $python-venv; }; $python -m venv ~/$REMOTE_VENV; $pip install -q --upgrade pip; $pip install -q -r requirements.lock \"jax[tpu]\"; $pip install -q --no-deps -e ."
