#!/usr/bin/env bash
# Creates the Cloud TPU VM (QUEUED=no) or queues a request for it (QUEUED=yes).
#
#   launch/create.sh [--dry-run] [ENV_FILE]
#
# Uses PROJECT, ZONE, TPU_NAME, ACCELERATOR_TYPE, RUNTIME_VERSION and PROVISIONING
# (on-demand, spot or reserved). A queued request is granted later: launch/status.sh
# shows its state, and the TPU VM is usable once it reads ACTIVE.
# AUTOCHECKPOINT=yes adds --autocheckpoint-enabled: before a maintenance event Cloud TPU
# then sends the run SIGTERM (else it gets none), and the run saves a checkpoint. The flag
# exists only under `gcloud alpha`, which create.sh then calls (and says so).
# EXTRA_CREATE_FLAGS (a bash array, or a string split on spaces) is appended as it is:
# e.g. (--service-account=... --network=... --reservation=...).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage() { sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options
load_tpu_env
require ACCELERATOR_TYPE RUNTIME_VERSION
PROVISIONING=${PROVISIONING:-on-demand}
case $PROVISIONING in
  on-demand) provisioning=() ;;
  spot) provisioning=(--spot) ;;
  reserved) provisioning=(--reserved) ;;
  *) die "PROVISIONING=$PROVISIONING must be on-demand, spot or reserved" ;;
esac
# The software version must be one made for the accelerator's generation.
case $ACCELERATOR_TYPE in
  v2-* | v3-*) runtimes="tpu-ubuntu2204-base tpu-vm-*" ;;
  v4-*) runtimes="tpu-ubuntu2204-base v2-alpha-tpuv4 tpu-vm-*" ;;
  v5p-*) runtimes="v2-alpha-tpuv5" ;;
  v5litepod-* | v5e-*) runtimes="v2-alpha-tpuv5-lite" ;;
  v6e-*) runtimes="v2-alpha-tpuv6e" ;;
  *) die "ACCELERATOR_TYPE=$ACCELERATOR_TYPE is not a TPU type this script knows (v4-32, v5p-64, v5litepod-16, v6e-8, ...)" ;;
esac
fits=0
for runtime in $runtimes; do
  # shellcheck disable=SC2053  # the runtime names may be patterns
  [[ $RUNTIME_VERSION == $runtime ]] && fits=1
done
((fits)) || die "RUNTIME_VERSION=$RUNTIME_VERSION does not run on $ACCELERATOR_TYPE; use ${runtimes// / or }"
AUTOCHECKPOINT=${AUTOCHECKPOINT:-no}
case $AUTOCHECKPOINT in
  yes) gcloud=(gcloud alpha) autocheckpoint=(--autocheckpoint-enabled)
    echo "AUTOCHECKPOINT=yes: gcloud alpha, for --autocheckpoint-enabled" >&2 ;;
  no) gcloud=(gcloud) autocheckpoint=() ;;
  *) die "AUTOCHECKPOINT=$AUTOCHECKPOINT must be yes or no" ;;
esac
split_words EXTRA_CREATE_FLAGS
create_flags=(${autocheckpoint[@]+"${autocheckpoint[@]}"} ${WORDS[@]+"${WORDS[@]}"})

if [[ $QUEUED == yes ]]; then
  run "${gcloud[@]}" compute tpus queued-resources create "$TPU_NAME" "${GCLOUD_TARGET[@]}" \
    --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --runtime-version="$RUNTIME_VERSION" ${provisioning[@]+"${provisioning[@]}"} \
    ${create_flags[@]+"${create_flags[@]}"}
  echo "queued; wait until launch/status.sh shows state ACTIVE, then run launch/copy_code.sh" >&2
else
  run "${gcloud[@]}" compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_TARGET[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" \
    ${provisioning[@]+"${provisioning[@]}"} ${create_flags[@]+"${create_flags[@]}"}
fi
