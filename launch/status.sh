#!/usr/bin/env bash
# Shows the queued request (QUEUED=yes: its state, ACTIVE once granted) or the TPU VM.
#
#   launch/status.sh [--dry-run] [ENV_FILE]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage() { sed -n '2,4s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options
load_tpu_env
if [[ $QUEUED == yes ]]; then
  run gcloud compute tpus queued-resources describe "$TPU_NAME" "${GCLOUD_TARGET[@]}"
else
  run gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_TARGET[@]}"
fi
