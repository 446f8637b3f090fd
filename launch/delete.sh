#!/usr/bin/env bash
# Deletes the TPU VM (QUEUED=no) or the queued request and its TPU VM (QUEUED=yes).
#
#   launch/delete.sh [--dry-run] [--yes] [ENV_FILE]
#
# gcloud asks for confirmation unless --yes is given. Checkpoints and logs in the gs://
# WORKDIR stay; files on the workers (code, virtual environment, ~/LOG_FILE) are lost.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage() { sed -n '2,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options --yes
load_tpu_env
quiet=()
[[ $(option_value --yes 0) == 1 ]] && quiet=(--quiet)
if [[ $QUEUED == yes ]]; then
  run gcloud compute tpus queued-resources delete "$TPU_NAME" "${GCLOUD_TARGET[@]}" --force \
    ${quiet[@]+"${quiet[@]}"}
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_TARGET[@]}" \
    ${quiet[@]+"${quiet[@]}"}
fi
