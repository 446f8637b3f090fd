#!/usr/bin/env bash
# Runs ON A TPU WORKER (launch/stop.sh --free copies it there; launch/watch.sh calls that
# before each start): ends what is left of a run and frees the TPU for the next one.
#
#   bash free_tpu.sh PID_FILE [GRACE_SECONDS]
#
# 1. The run: run.sh starts it in a process group of its own whose id PID_FILE holds. The
#    group gets SIGTERM (a run still training saves a checkpoint if it can), then SIGKILL
#    after GRACE_SECONDS (default 30).
# 2. Any process still holding a TPU device open (/dev/accel*, /dev/vfio/[0-9]*; a
#    space-separated MPL_TPU_DEVICES replaces the list) gets SIGKILL: a survivor of an
#    earlier run keeps the chips, and the next run's libtpu refuses to open them.
# 3. libtpu's lock file (/tmp/libtpu_lockfile, or MPL_TPU_LOCKFILE) is removed, and so are
#    PID_FILE and the run's exit status beside it (.exit for .pid).
# Prints a line for each process it ends; exits 1 if the TPU is still held after that.
set -u

pid_file=${1:?usage: free_tpu.sh PID_FILE [GRACE_SECONDS]}
grace=${2:-30}
host=${MPL_WORKER_NAME:-$(hostname)}

alive() { kill -0 "$1" 2>/dev/null; }
# kill, or with sudo for a process of another user (where sudo needs no password).
end() { kill "$@" 2>/dev/null || sudo -n kill "$@" 2>/dev/null; }

if [[ -f $pid_file ]]; then
  pid=$(cat "$pid_file")
  if [[ $pid =~ ^[0-9]+$ ]] && ((pid > 1)) && alive "$pid"; then
    echo "$host: ending run $pid"
    end -TERM -- "-$pid" || end -TERM "$pid"
    waited=0
    while alive "$pid" && ((waited < grace)); do
      sleep 1
      waited=$((waited + 1))
    done
    end -KILL -- "-$pid" || end -KILL "$pid"
  fi
fi
rm -f "$pid_file" "${pid_file%.pid}.exit"  # no stale status for the next run's reader

# find, with sudo where it needs no password: other users' /proc/PID/fd are closed to us.
finder=(find)
if [[ $EUID != 0 ]] && sudo -n true 2>/dev/null; then finder=(sudo -n find); fi
# The device patterns, as find -lname matches the targets of /proc/PID/fd/* links.
read -r -a devices <<<"${MPL_TPU_DEVICES:-/dev/accel* /dev/vfio/[0-9]*}"
# "PID DEVICE" for each process (not this one) that holds one of the devices open.
holders() {
  local device link pid
  for device in "${devices[@]}"; do
    "${finder[@]}" /proc/[0-9]*/fd -maxdepth 1 -lname "$device" 2>/dev/null | while read -r link; do
      pid=${link#/proc/}
      pid=${pid%%/*}
      ((pid == $$)) || echo "$pid $(readlink "$link" 2>/dev/null || echo "$device")"
    done
  done | sort -u
}
while read -r pid device; do
  echo "$host: ending process $pid, which holds $device"
  end -KILL "$pid"
done < <(holders)
for _ in 1 2 3 4 5; do  # SIGKILL takes a moment
  left=$(holders)
  [[ -z $left ]] && break
  sleep 1
done
[[ -z $left ]] || { echo "$host: the TPU is still held: $left" >&2; exit 1; }

lock=${MPL_TPU_LOCKFILE:-/tmp/libtpu_lockfile}
rm -f "$lock" 2>/dev/null || sudo -n rm -f "$lock"
exit 0
