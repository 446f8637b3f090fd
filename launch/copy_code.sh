#!/usr/bin/env bash
# Copies the code at one git revision to every TPU worker, into ~/REMOTE_DIR.
#
#   launch/copy_code.sh [--dry-run] [ENV_FILE]
#
# REVISION (a commit, tag or branch of this repository) is resolved to its commit; that
# commit's tree (git archive: committed files only, never local edits) replaces
# ~/REMOTE_DIR on all workers, with the commit in ~/REMOTE_DIR/REVISION. Stop a running
# job first (launch/stop.sh).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage() { sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

parse_args "$@"
check_options
load_tpu_env
require REVISION
commit=$(git -C "$REPO_ROOT" rev-parse --verify --quiet "$REVISION^{commit}") ||
  die "REVISION=$REVISION is not a commit of $REPO_ROOT"
[[ $commit == "$REVISION" ]] || echo "REVISION=$REVISION is commit $commit" >&2
archive_name=mpl_jax-$commit.tar.gz
archive=${TMPDIR:-/tmp}/$archive_name

run git -C "$REPO_ROOT" archive --format=tar.gz --output="$archive" "$commit"
run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:$archive_name" \
  "${GCLOUD_TARGET[@]}" --worker=all
tpu_ssh all "rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR && tar -xzf ~/$archive_name -C ~/$REMOTE_DIR && echo $commit > ~/$REMOTE_DIR/REVISION && rm ~/$archive_name"
run rm -f "$archive"
