"""What the Markdown docs and the notebook name, checked against the repository.

`problems(text)` reads the code spans and fenced blocks of one document and returns one
line for each reference that does not resolve:
- a repository path (`mpl_jax/compiled.py`, `launch/run.sh`, `benchmarks/results/x.jsonl`)
  must exist; `path:12` must have that line; `configs/x.py:arg` must give a config for
  `arg`; `path: name` and `path::test_name` must be defined in that Python file;
- a dotted name under a package of the repository (`mpl_jax.compiled.Compiled.step`,
  `python -m benchmarks.step_bench`) must be a module and the names defined in it;
- in a command (`python main.py ...`, `python -m mod ...`, `.venv/bin/python x.py ...`,
  `make target`, `launch/x.sh ...`): every `--flag` the program does not define, every
  `--config.a.b` the named config lacks, and every make target the Makefile lacks;
- a lone `--config.a.b` must be a field of some config in configs/;
- a file named without its folder (`train.py`, `run_times.jsonl`) must be a file of the
  repository, or a name its code quotes (`results.json`, which a run writes).
Names are found by reading the source (ast), never by importing it.
"""

import ast
import functools
import glob
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("README.md", "BENCHMARKS.md", "RESULTS.md", "RELIABILITY.md", "WORKSPACE.md",
        "docs/METHOD.md", "launch/README.md")
NOTEBOOK = "notebooks/mpl_colab.ipynb"
PACKAGES = ("mpl_jax", "configs", "tests", "benchmarks", "tools", "experiments")
TOP = ("mpl_jax", "configs", "tests", "benchmarks", "tools", "launch", "experiments",
       "notebooks", "docs", ".ci")
SHORT = ("steps", "data", "models")  # paths the docs give relative to mpl_jax/
# Files the user makes from a template (launch/env from launch/env.example), named in docs.
USER_MADE = ("launch/env",)
ABSL_FLAGS = {"help", "helpfull", "verbosity", "v", "logtostderr", "alsologtostderr",
              "log_dir", "flagfile"}

CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
PATH = re.compile(r"(?<![\w./$~-])((?:%s)/[\w./-]*)" % "|".join(re.escape(t) for t in TOP + SHORT))
LOCATOR = re.compile(r"(?::(?P<line>\d+)(?:-\d+)?\b|:(?P<arg>[\w,]+)|"
                     r": (?P<name>[A-Za-z_][\w.]*)|::(?P<test>\w+))")
DOTTED = re.compile(r"(?<![\w./-])((?:%s)(?:\.[A-Za-z_]\w*)+)" % "|".join(PACKAGES))
# `compiled.Compiled`, `estimators.settings`: a module of mpl_jax/ by its short name (not
# data/, whose name is also a config section).
SHORT_MODULES = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(ROOT, "mpl_jax", "*.py")) if not p.endswith("__init__.py"))
SHORT_DOTTED = re.compile(r"(?<![\w./-])((?:%s)(?:\.[A-Za-z_]\w*)+)" % "|".join(
    SHORT_MODULES))
# A file named without its folder (`train.py`, `run_times.jsonl`, `results.json`).
BARE_FILE = re.compile(r"(?<![\w./$~<>{}*-])([\w-]+\.(?:py|sh|jsonl|json|lock|ipynb|md|cfg|"
                       r"toml|png|txt))(?![/\w])")
TOP_FILE = re.compile(r"^(?:[A-Z]+\.md|Makefile|requirements[\w-]*\.lock|setup\.cfg|"
                      r"pyproject\.toml|main\.py|demo\.py)$")


def texts(doc: str) -> str:
  """The text of a doc; for the notebook, its markdown cells. RELIABILITY.md's bad-input
  table names wrong input on purpose; tests/bad_input_test.py runs each of its rows."""
  path = os.path.join(ROOT, doc)
  if doc.endswith(".ipynb"):
    cells = json.load(open(path))["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
  text = open(path).read()
  if doc == "RELIABILITY.md":
    head, _, rest = text.partition("\n## Bad input")
    text = head + "\n## " + rest.partition("\n## ")[2]
  return text


def _resolve_path(path: str) -> str | None:
  path = path.rstrip(".,")
  if path in USER_MADE:
    return path
  for candidate in (path, os.path.join("mpl_jax", path)):
    if os.path.exists(os.path.join(ROOT, candidate)):
      return candidate
    if glob.glob(os.path.join(ROOT, glob.escape(candidate)) + ".*"):
      return candidate  # a prefix of saved files (--from_saved=PREFIX)
  return None


@functools.lru_cache(maxsize=None)
def _tree(path: str) -> ast.Module:
  return ast.parse(open(os.path.join(ROOT, path)).read())


def _defined(body) -> dict[str, ast.AST]:
  names = {}
  for node in body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names[node.name] = node
    elif isinstance(node, ast.Assign):
      for target in node.targets:
        for leaf in ast.walk(target):
          if isinstance(leaf, ast.Name):
            names[leaf.id] = node
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
      names[node.target.id] = node
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      for alias in node.names:
        names[(alias.asname or alias.name).split(".")[0]] = node
    elif isinstance(node, (ast.If, ast.Try)):
      names.update(_defined(node.body))
  return names


def name_in_file(path: str, dotted: str) -> bool:
  """Whether `dotted` (`f`, `Class.method`) is defined in the Python file at `path`."""
  body = _tree(path).body
  for part in dotted.split("."):
    node = _defined(body).get(part)
    if node is None:
      return False
    body = getattr(node, "body", [])
  return True


def _module_file(module: str) -> str | None:
  base = module.replace(".", "/")
  for candidate in (base + ".py", base + "/__init__.py"):
    if os.path.isfile(os.path.join(ROOT, candidate)):
      return candidate
  return None


def dotted_problem(dotted: str) -> str | None:
  """None if `dotted` is a module of the repo followed by names defined in it."""
  parts = dotted.split(".")
  for cut in range(len(parts), 0, -1):
    module = _module_file(".".join(parts[:cut]))
    if module:
      rest = ".".join(parts[cut:])
      if not rest or name_in_file(module, rest):
        return None
      return f"`{dotted}`: {module} defines no {rest!r}"
  return f"`{dotted}`: no such module"


@functools.lru_cache(maxsize=None)
def config_keys(spec: str) -> frozenset[str] | str:
  """The dotted field names of `configs/x.py[:arg]`, or why it does not load or names no
  method this data set offers."""
  from mpl_jax import config_files  # pylint: disable=g-import-not-at-top
  from mpl_jax import methods  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  try:
    config = config_files.load(os.path.join(ROOT, path) + (f":{arg}" if arg else ""))
    if config.method not in methods.for_data(config.data.name):
      return f"method {config.method!r} is not one of {methods.for_data(config.data.name)}"
  except Exception as e:  # pylint: disable=broad-except
    return f"{type(e).__name__}: {e}"
  keys = set()

  def walk(node, prefix):
    for key, value in node.items():
      keys.add(prefix + key)
      if hasattr(value, "items"):
        walk(value, prefix + key + ".")
  walk(config, "")
  return frozenset(keys)


@functools.lru_cache(maxsize=None)
def all_config_keys() -> frozenset[str]:
  keys = set()
  for path in glob.glob(os.path.join(ROOT, "configs", "*.py")):
    name = os.path.relpath(path, ROOT)
    if name.endswith(("common.py", "__init__.py")):
      continue
    found = config_keys(name)
    if not isinstance(found, str):
      keys |= found
  return frozenset(keys)


@functools.lru_cache(maxsize=None)
def _repository_files() -> tuple[frozenset[str], str]:
  """(the base names of the repository's files, the text of its code), both from the top
  folder's files and the folders in TOP. The code is every .py, .sh and .ipynb file but
  this checker and its tests, so that a name the docs use is not found in them alone."""
  names, code = set(), []
  paths = [os.path.join(ROOT, f) for f in os.listdir(ROOT)
           if os.path.isfile(os.path.join(ROOT, f))]
  for top in TOP:
    for folder, _, found in os.walk(os.path.join(ROOT, top)):
      paths.extend(os.path.join(folder, f) for f in found)
  own = {os.path.join(ROOT, "tests", f) for f in ("doc_refs.py", "docs_test.py")}
  for path in paths:
    names.add(os.path.basename(path))
    if path.endswith((".py", ".sh", ".ipynb")) and path not in own:
      code.append(open(path, encoding="utf-8", errors="replace").read())
  return frozenset(names), "\n".join(code)


def bare_file_problem(name: str) -> str | None:
  """A file named without its folder is a file of the repository, or one that its code
  writes: the name is quoted in the code (`results.json`, `curves.png`)."""
  names, code = _repository_files()
  if name in names or re.search(r"[\"'/]%s[\"']" % re.escape(name), code):
    return None
  return f"`{name}`: no file of that name, and no code names it"


def path_problem(path: str, locator: re.Match | None) -> str | None:
  found = _resolve_path(path)
  if found is None:
    return f"`{path}`: no such file or folder"
  if locator is None:
    return None
  if locator["line"]:
    lines = open(os.path.join(ROOT, found)).read().count("\n") + 1
    if int(locator["line"]) > lines:
      return f"`{path}:{locator['line']}`: the file has {lines} lines"
  elif locator["arg"] and found.startswith("configs/") and found.endswith(".py"):
    loaded = config_keys(f"{found}:{locator['arg']}")
    if isinstance(loaded, str):
      return f"`{path}:{locator['arg']}`: {loaded}"
  elif (locator["name"] or locator["test"]) and found.endswith(".py"):
    name = locator["name"] or locator["test"]
    if not name_in_file(found, name):
      return f"`{path}`: defines no {name!r}"
  return None


def _program_source(program: str) -> str | None:
  found = _resolve_path(program) if "/" in program or program.endswith(".py") else None
  if found is None and "/" not in program and not program.endswith((".py", ".sh")):
    found = _module_file(program)
  if found is None or not os.path.isfile(os.path.join(ROOT, found)):
    return None
  source = open(os.path.join(ROOT, found)).read()
  if found.endswith(".py"):  # flags may be added by a helper of a module it imports
    for node in ast.walk(ast.parse(source)):
      if isinstance(node, ast.ImportFrom) and node.module in PACKAGES:
        modules = [f"{node.module}.{a.name}" for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        modules = [node.module]
      elif isinstance(node, ast.Import):
        modules = [a.name for a in node.names]
      else:
        continue
      for module in modules:
        if module.split(".")[0] in PACKAGES and _module_file(module):
          source += open(os.path.join(ROOT, _module_file(module))).read()
  return source


def command_problems(line: str) -> list[str]:
  """The flags, configs and targets of one command line that do not exist."""
  words = line.replace("\\\n", " ").split()
  if not words:
    return []
  problems = []
  if words[0] == "make":
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    for target in words[1:]:
      if re.fullmatch(r"[\w-]+", target) and not re.search(
          rf"^{re.escape(target)}:", makefile, re.M):
        problems.append(f"`make {target}`: no such target in the Makefile")
    return problems
  start = next((i for i, w in enumerate(words)
                if w.endswith(("python", "python3", ".sh", ".py"))), None)
  if start is None:
    return []
  rest = words[start + 1:]
  if words[start].endswith((".sh", ".py")):
    program, args = words[start], rest
  elif rest[:1] == ["-m"]:
    program, args = (rest[1] if len(rest) > 1 else ""), rest[2:]
  else:
    program, args = (rest[0] if rest else ""), rest[1:]
  if program.startswith(("pip", "-")) or not program:
    return []
  source = _program_source(program)
  if source is None:
    if program.startswith(TOP + SHORT) or program.endswith(".py") or program.startswith(
        PACKAGES):
      problems.append(f"`{program}`: no such program")
    return problems
  config = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
  for arg in args:
    flag = re.match(r"--([\w.-]+)", arg)
    if not flag:
      continue
    name = flag.group(1)
    if name.startswith("config.") and config:
      keys = config_keys(config) if not config.startswith(("...", "DIR")) else None
      if isinstance(keys, str):
        problems.append(f"`--config={config}`: {keys}")
      elif keys is not None and name[len("config."):] not in keys:
        problems.append(f"`{arg}`: {config} has no field {name[len('config.'):]!r}")
      continue
    bare = name.removeprefix("no")
    if name in ABSL_FLAGS or re.search(
        rf"""--{re.escape(name)}\b|["']{re.escape(name)}["']|["']{re.escape(bare)}["']""",
        source):
      continue
    problems.append(f"`{program} --{name}`: the program defines no such flag")
  return problems


def problems(text: str) -> list[str]:
  """Every reference of one document that does not resolve."""
  found = []
  spans = CODE_SPAN.findall(FENCE.sub("", text))
  blocks = FENCE.findall(text)
  for chunk in spans + blocks:
    for match in PATH.finditer(chunk):
      path = match.group(1)
      if re.search(r"[<>*{}]|\.\.\.|/\.\.", chunk[match.start():match.end() + 1]):
        continue
      locator = LOCATOR.match(chunk, match.end())
      problem = path_problem(path, locator)
      if problem:
        found.append(problem)
    for match in DOTTED.finditer(chunk):
      if chunk[match.end():match.end() + 1] == "/" or re.search(r"\.(py|md|sh)$",
                                                                  match.group(1)):
        continue
      problem = dotted_problem(match.group(1))
      if problem:
        found.append(problem)
    for match in SHORT_DOTTED.finditer(chunk):
      if re.search(r"\.(py|md|sh|json|png|jsonl)$", match.group(1)):
        continue
      problem = dotted_problem("mpl_jax." + match.group(1))
      if problem:
        found.append(problem)
  for span in spans:
    if TOP_FILE.match(span) and not os.path.exists(os.path.join(ROOT, span)):
      found.append(f"`{span}`: no such file")
    else:
      found.extend(filter(None, map(bare_file_problem, BARE_FILE.findall(span))))
    if re.fullmatch(r"(--config\.[\w.]+(=\S*)?\s*)+", span):
      for field in re.findall(r"--config\.([\w.]+)", span):
        if field not in all_config_keys():
          found.append(f"`{span}`: no config in configs/ has the field {field!r}")
    elif re.match(r"(\S*python3?|make|\S+\.sh|\S+\.py)\s", span):
      found.extend(command_problems(span))
  for block in blocks:
    for line in re.sub(r"\\\n\s*", " ", block).splitlines():
      line = line.split(" #", 1)[0].strip()
      if re.match(r"(\S*python3?|make|\S+\.sh)\s", line):
        found.extend(command_problems(line))
  return found
