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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
TPU_SCRIPTS = ["create.sh", "status.sh", "copy_code.sh", "setup.sh", "run.sh", "logs.sh",
               "stop.sh", "delete.sh"]
TARGET = ["--project=test-project", "--zone=europe-west4-a"]
SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "test-tpu", *TARGET]

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
args, home = sys.argv[1:], os.environ.get("FAKE_WORKER_HOME", "")
if tool == "gcloud" and args[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
  shutil.copy(args[4], os.path.join(home, args[5].split(":", 1)[1]))
elif tool == "gcloud" and args[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
  command = next(a for a in args if a.startswith("--command="))[len("--command="):]
  sys.exit(subprocess.run(["bash", "-c", command], cwd=home,
                          env=dict(os.environ, HOME=home)).returncode)
elif tool == "gcloud" and os.environ.get("FAKE_TPU_STATE") and args[3:4] == ["describe"]:
  if not os.path.exists(os.environ["FAKE_TPU_STATE"]):
    sys.exit("ERROR: NOT_FOUND")
  print(open(os.environ["FAKE_TPU_STATE"]).read().strip())
elif tool == "gcloud" and os.environ.get("FAKE_TPU_STATE") and args[3:4] == ["create"]:
  open(os.environ["FAKE_TPU_STATE"], "w").write("READY")
elif tool == "gcloud" and os.environ.get("FAKE_TPU_STATE") and args[3:4] == ["delete"]:
  os.remove(os.environ["FAKE_TPU_STATE"])
elif tool == "sbatch":
  chdir = next(a for a in args if a.startswith("--chdir="))[len("--chdir="):]
  exports = next(a for a in args if a.startswith("--export="))[len("--export="):]
  script = next(i for i, a in enumerate(args) if not a.startswith("--"))
  env = dict(os.environ, SLURM_JOB_ID="42")
  env.update(kv.split("=", 1) for kv in exports.split(",") if "=" in kv)
  sys.exit(subprocess.run(["bash", *args[script:]], cwd=chdir, env=env).returncode)
elif tool == "srun" and os.environ.get("FAKE_SRUN") == "run":
  command = next(i for i, a in enumerate(args) if not a.startswith("--"))
  sys.exit(subprocess.run(args[command:]).returncode)
'''

# A stand-in for main.py's training: resumes from the newest checkpoint of --workdir (gs://
# maps to FAKE_GS), writes one checkpoint per step up to 40, and on SIGTERM stops after the
# current step with main.py's preemption status (75); run.sh's --preflight_hosts check
# exits FAKE_PREFLIGHT (default 0: passes). Each start appends "<first step>
# <JAX_COMPILATION_CACHE_DIR> <cwd>" to <workdir>/starts.
TRAINER = r'''#!{python}
import os, signal, sys, time
if any(a.startswith("--preflight_hosts=") for a in sys.argv):  # run.sh's check
  sys.exit(int(os.environ.get("FAKE_PREFLIGHT", "0")))
workdir = next(a for a in sys.argv if a.startswith("--workdir="))[len("--workdir="):]
if workdir.startswith("gs://"):
  workdir = os.path.join(os.environ["FAKE_GS"], workdir[len("gs://"):])
checkpoints = os.path.join(workdir, "checkpoints")
os.makedirs(checkpoints, exist_ok=True)
start = max((int(d) for d in os.listdir(checkpoints)), default=0)
with open(os.path.join(workdir, "starts"), "a") as f:
  f.write(f"{{start}} {{os.environ.get('JAX_COMPILATION_CACHE_DIR', '-')}} {{os.getcwd()}}\n")
with open(os.path.join(workdir, "trainer.pid"), "w") as f:
  f.write(str(os.getpid()))
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
for step in range(start + 1, 41):
  if stop:
    sys.exit(75)
  time.sleep(0.1)
  os.mkdir(os.path.join(checkpoints, str(step)))
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
    return {"PATH": f"{self.bin}:{os.environ['PATH']}", "HOME": str(self.tmp / "home"),
            "TMPDIR": str(self.tmp / "tmp"), "LANG": "C.UTF-8", "FAKE_MODE": mode,
            "FAKE_LOG": str(self.log), "FAKE_WORKER_HOME": str(self.worker_home), **env}

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

  def calls(self) -> list[list[str]]:
    if not self.log.exists():
      return []
    return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture(name="launch")
def _launch(tmp_path):
  return Launcher(tmp_path)


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
       "update -q && sudo apt-get install -y -q python3.11 python3.11-venv; }; python3.11 -m "
       f"venv ~/mpl_venv; {pip} install -q --upgrade pip; {pip} install -q -r "
       f'requirements.lock "jax[tpu]"; {pip} install -q --no-deps -e .']]


# run.sh's wrapper on the worker: passes SIGTERM on, writes the exit status to ~/<$1>.
WRAPPER = ('f=$HOME/$1; shift; rm -f "$f"; "$@" & c=$!; trap "kill -TERM $c 2>/dev/null" '
           'TERM INT; while kill -0 $c 2>/dev/null; do wait $c; done; wait $c; echo $? > "$f"')


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
      "nohup bash -c f=" + shlex.quote(WRAPPER[2:]) + " run mpl_jax.exit env MPL_DISTRIBUTED=always "
      "TF_CPP_MIN_LOG_LEVEL=2 "
      "JAX_COMPILATION_CACHE_DIR=gs://test-bucket/runs/digits/compilation_cache "
      "~/mpl_venv/bin/python "
      "main.py --config=configs/digits.py:mpl --workdir=gs://test-bucket/runs/digits "
      "--config.num_steps=10 --config.note='it'\\''s a test' >> ~/mpl_jax.log 2>&1 "
      "< /dev/null & echo $! > ~/mpl_jax.pid"]


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
     "tpu-ubuntu2204-base or tpu-vm-*"),
    ("watch.sh", ["--every=soon"], {}, "error: --every=soon must be a number of seconds"),
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


def test_watch_restarts_a_preempted_pod_run_from_its_newest_checkpoint(launch):
  """watch.sh alone: creates the TPU VM and starts the run; after a preemption (the VM's
  state turns PREEMPTED and its processes die) deletes and recreates it and starts the
  run again, which resumes from the newest checkpoint; exits 0 once the run finished."""
  env = launch.env_file(REVISION=root_commit())
  gs, state = launch.tmp / "gs", launch.tmp / "tpu_state"
  workdir = gs / "test-bucket" / "runs" / "digits"
  launch.trainer(launch.worker_home / "mpl_venv" / "bin" / "python")  # set up: no setup.sh
  watch = launch.start("watch.sh", "--every=0.2", env, FAKE_GS=str(gs),
                       FAKE_TPU_STATE=str(state))
  try:
    _wait_for(lambda: len(_steps(workdir)) >= 3, timeout=30)
    state.write_text("PREEMPTED")  # the TPU VM goes away with everything on it
    for pid_file in (launch.worker_home / "mpl_jax.pid", workdir / "trainer.pid"):
      os.kill(int(pid_file.read_text()), signal.SIGKILL)
    preempted_at = max(_steps(workdir))
    _, err = watch.communicate(timeout=60)
  finally:
    watch.kill()
  assert watch.returncode == 0, err
  assert "the run finished" in err
  starts = [line.split() for line in (workdir / "starts").read_text().splitlines()]
  cache = "gs://test-bucket/runs/digits/compilation_cache"
  code = str(launch.worker_home / "mpl_jax")
  assert starts == [["0", cache, code], [str(preempted_at), cache, code]]
  assert (workdir / "results.json").exists() and max(_steps(workdir)) == 40
  lifecycle = [c[4] for c in launch.calls() if c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]
               and c[4] in ("create", "delete")]
  assert lifecycle == ["create", "delete", "create"]


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
  assert [c[8] for c in launch.calls()] == ["--worker=0"]  # the check only
  assert not (launch.worker_home / "mpl_jax.pid").exists()


def test_watch_stops_when_run_sh_refuses_the_config(launch):
  env = launch.env_file(REVISION=root_commit())
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
  assert [os.path.basename(line[0]) for line in lines[2:]] == [
      "delete.sh", "create.sh", "copy_code.sh", "setup.sh", "run.sh", "run.sh"]


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


def unpack(code: str, commit: str) -> list[list[str]]:
  """The dry-run lines that unpack `commit` into `code` for the job to run."""
  return [["rm", "-rf", code], ["mkdir", "-p", code],
          ["git", "-C", ROOT, "archive", commit, "|", "tar", "-x", "-C", code],
          ["echo", commit, ">", f"{code}/REVISION"]]


def test_slurm_one_task_per_node_sees_all_gpus(launch):
  env = launch.env_file(PARTITION="a100", TIME="2:00:00")
  logs = os.path.join(LAUNCH, "slurm_logs")
  commit = head_commit()
  code = os.path.join(LAUNCH, "slurm_code", commit)
  assert dry(launch, "slurm.sh", PARTITION="a100", TIME="2:00:00") == [
      ["mkdir", "-p", logs], *unpack(code, commit),
      ["sbatch", "--job-name=mpl_jax", "--nodes=2", "--ntasks-per-node=1",
       "--gpus-per-node=4", "--cpus-per-task=32", "--signal=TERM@300", "--requeue",
       "--open-mode=append", f"--output={logs}/%x-%j.out", f"--chdir={code}",
       f"--export=ALL,MPL_LAUNCH_DIR={LAUNCH}", "--partition=a100", "--time=2:00:00",
       os.path.join(LAUNCH, "slurm.sh"), "--in-job", env],
      ["srun", "--kill-on-bad-exit=1", "env", "MPL_DISTRIBUTED=auto", "TF_CPP_MIN_LOG_LEVEL=2",
       "JAX_LOCAL_DEVICE_IDS=0,1,2,3", "python3", "main.py", "--config=configs/digits.py:mpl",
       "--workdir=gs://test-bucket/runs/digits"]]


def test_slurm_one_task_per_gpu_and_the_job_runs_srun(launch):
  logs, code_root = str(launch.tmp / "logs"), str(launch.tmp / "code")
  commit = head_commit()
  code = os.path.join(code_root, commit)
  env = launch.env_file(TASKS="gpu", SLURM_LOG_DIR=logs, PYTHON="/opt/venv/bin/python",
                        ACCOUNT="ml", CPUS_PER_GPU="12", SIGNAL_LEAD="600",
                        SLURM_CODE_DIR=code_root, raw="EXTRA_ARGS='--config.seed=3'\n")
  srun = ["srun", "--kill-on-bad-exit=1", "env", "MPL_DISTRIBUTED=auto",
          "TF_CPP_MIN_LOG_LEVEL=2", "/opt/venv/bin/python", "main.py",
          "--config=configs/digits.py:mpl", "--workdir=gs://test-bucket/runs/digits",
          "--config.seed=3"]
  sbatch = ["sbatch", "--job-name=mpl_jax", "--nodes=2", "--ntasks-per-node=4",
            "--gpus-per-node=4", "--cpus-per-task=12", "--signal=TERM@600", "--requeue",
            "--open-mode=append", f"--output={logs}/%x-%j.out", f"--chdir={code}",
            f"--export=ALL,MPL_LAUNCH_DIR={LAUNCH}", "--account=ml",
            os.path.join(LAUNCH, "slurm.sh"), "--in-job", env]
  assert printed(launch("slurm.sh", "--dry-run", env)) == [
      ["mkdir", "-p", logs], *unpack(code, commit), sbatch, srun]
  assert launch.calls() == []
  result = launch("slurm.sh", env, mode="simulate")
  assert result.returncode == 0, result.stderr
  assert launch.calls() == [sbatch, srun]  # sbatch, then the job script's srun
  assert os.path.isdir(logs)
  # The job runs the committed files of the revision, unpacked once.
  assert open(os.path.join(code, "REVISION")).read().strip() == commit
  assert os.path.exists(os.path.join(code, "main.py"))
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
    ({"MPL_JAX_DISTRIBUTED": "1"}, False, True, {}),             # the earlier switch
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
