"""Architecture rules of the package, read from the sources with `ast` (nothing is imported).

1. No import circles among the modules of mpl_jax/: lazy imports inside functions and imports
   under `if TYPE_CHECKING` count like any other.
2. No source file under mpl_jax/ longer than MAX_LINES lines.
3. No method chosen by comparing it with strings (or by `match` on string cases) outside
   the method registry mpl_jax/methods.py; no estimator, reward or student update chosen
   so outside the estimator registry mpl_jax/estimators.py.
4. No step function jitted outside the compiled-step module mpl_jax/compiled.py: a
   `jax.jit` (call or decorator) of a step function (`(state, batch, rng, ...)` of
   mpl_jax/steps/, a phase's `step_fn`, the guard `guard_step`, a name `step`) in mpl_jax/,
   tools/, benchmarks/, experiments/ or main.py (tests/ may jit what they test).

Each rule is a function of a root directory: the real-tree tests run it on this checkout, the
unit tests below on small trees written under `tmp_path`.
"""

import ast
import dataclasses
import pathlib
from typing import Iterable, Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "mpl_jax"
MAX_LINES = 400
REGISTRY = "mpl_jax/methods.py"
ESTIMATOR_REGISTRY = "mpl_jax/estimators.py"
# The config fields the estimator registry resolves (config.mpl.<field>).
ESTIMATOR_FIELDS = ("estimator", "reward", "student_update")
COMPILED = "mpl_jax/compiled.py"
STEPS_PACKAGE = "mpl_jax/steps"
# Names that stand for a step function wherever they appear in what is jitted.
STEP_NAMES = ("step", "step_fn", "guard_step")
# Where a method must not be chosen by string. configs/ is left out on purpose: experiment
# files legitimately pick their settings per method.
METHOD_CHOICE_PATHS = ("mpl_jax", "tools", "benchmarks", "experiments", "main.py")
MAX_CYCLES = 100  # a safeguard: elementary circles can be many in a large tangle

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_CHOICE_OPS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def _python_files(root: pathlib.Path, rel: str) -> list[pathlib.Path]:
  """The .py files at root/rel (a file, or a folder searched recursively), sorted."""
  path = root / rel
  if path.is_file():
    return [path] if path.suffix == ".py" else []
  return sorted(p for p in path.rglob("*.py")
                if not any(part == "__pycache__" or part.startswith(".")
                           for part in p.relative_to(root).parts))


def _rel(root: pathlib.Path, path: pathlib.Path) -> str:
  return path.relative_to(root).as_posix()


def _one_line(text: str) -> str:
  return " ".join(text.split())


# Rule 1: import circles.


@dataclasses.dataclass(frozen=True)
class Import:
  """One import of a package module: who imports what, where, and the statement's text."""
  source: str
  target: str
  path: str
  line: int
  where: str  # "" at module level, "in a function" or "under TYPE_CHECKING"
  text: str


def _module_name(root: pathlib.Path, path: pathlib.Path) -> str:
  parts = path.relative_to(root).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """Module name -> file of every module under root/mpl_jax (a package is its __init__.py)."""
  return {_module_name(root, p): p for p in _python_files(root, PACKAGE)}


def _is_type_checking(test: ast.expr) -> bool:
  return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
      isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_statements(nodes: Iterable[ast.AST], where: str = "") -> Iterator[tuple]:
  """Every import statement among nodes and below them, with where it sits."""
  for node in nodes:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node, where
    elif isinstance(node, ast.If) and _is_type_checking(node.test):
      yield from _import_statements(node.body, where or "under TYPE_CHECKING")
      yield from _import_statements(node.orelse, where)
    else:
      inner = "in a function" if isinstance(node, _FUNCTIONS) else where
      yield from _import_statements(ast.iter_child_nodes(node), inner)


def _closest_module(name: str | None, modules: dict) -> str | None:
  """name if it is a module, else its closest enclosing module; None outside the package."""
  while name:
    if name in modules:
      return name
    name = name.rpartition(".")[0]
  return None


def _from_base(importer: str, is_package: bool, node: ast.ImportFrom) -> str | None:
  """The absolute module a `from X import ...` reads from, relative imports resolved."""
  if not node.level:
    return node.module
  package = importer.split(".") if is_package else importer.split(".")[:-1]
  if node.level > len(package):
    return None
  base = ".".join(package[:len(package) - node.level + 1])
  return f"{base}.{node.module}" if node.module else base


def _imported_names(importer: str, is_package: bool, node: ast.AST) -> list[str]:
  """The dotted names a statement may import: `from a import b` may mean module a.b."""
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names]
  base = _from_base(importer, is_package, node)
  if base is None:
    return []
  return [base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names]


def _imports_of(root: pathlib.Path, path: pathlib.Path, modules: dict) -> list[Import]:
  """The package modules that the file at path imports, self-imports left out."""
  source = path.read_text()
  importer = _module_name(root, path)
  found = []
  for node, where in _import_statements([ast.parse(source, filename=str(path))]):
    text = _one_line(ast.get_source_segment(source, node) or "")
    for name in _imported_names(importer, path.name == "__init__.py", node):
      target = _closest_module(name, modules)
      if target and target != importer:
        found.append(Import(importer, target, _rel(root, path), node.lineno, where, text))
  return found


def import_graph(root: pathlib.Path) -> dict[str, dict[str, list[Import]]]:
  """Importer -> imported module -> the imports behind that edge, for the package at root."""
  modules = package_modules(root)
  graph = {name: {} for name in modules}
  for path in modules.values():
    for imp in _imports_of(root, path, modules):
      graph[imp.source].setdefault(imp.target, []).append(imp)
  return graph


def strongly_connected(graph: dict[str, Iterable[str]]) -> list[list[str]]:
  """Tarjan's strongly connected components of graph (iterative), each sorted."""
  index, low, stack, on_stack, components = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    return node, iter(sorted(graph.get(node, ())))

  for start in sorted(graph):
    if start in index:
      continue
    work = [visit(start)]
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          work.append(visit(child))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while not component or component[-1] != node:
          component.append(stack.pop())
          on_stack.discard(component[-1])
        components.append(sorted(component))
  return components


def _cycles_in(component: list[str], graph: dict, limit: int) -> list[list[str]]:
  """The elementary circles within one component, each from its smallest module, closed."""
  cycles = []

  def extend(path, allowed):
    for nxt in sorted(graph[path[-1]]):
      if len(cycles) >= limit:
        return
      if nxt == path[0]:
        cycles.append(path + [nxt])
      elif nxt in allowed and nxt not in path:
        extend(path + [nxt], allowed)

  for i, start in enumerate(component):
    extend([start], set(component[i + 1:]))
  return cycles


def import_cycles(root: pathlib.Path) -> list[list[Import]]:
  """Every import circle of the package at root, as the imports that close it, in order."""
  graph = import_graph(root)
  cycles = []
  for component in strongly_connected(graph):
    if len(component) > 1:
      for cycle in _cycles_in(component, graph, MAX_CYCLES - len(cycles)):
        cycles.append([graph[a][b][0] for a, b in zip(cycle, cycle[1:])])
  return cycles


def _cycle_lines(cycle: list[Import], graph: dict) -> list[str]:
  names = [imp.source for imp in cycle] + [cycle[0].source]
  lines = ["  " + " -> ".join(names)]
  for imp in cycle:
    for site in graph[imp.source][imp.target]:
      where = f" ({site.where})" if site.where else ""
      lines.append(f"      {site.path}:{site.line}{where}: {site.text}")
  return lines


def cycles_message(cycles: list[list[Import]], graph: dict) -> str:
  lines = [f"{len(cycles)} import circle(s) in {PACKAGE}/. Break each one: move what both "
           "modules need into a lower module that imports neither, or pass it in as an "
           "argument. A lazy import inside a function still closes a circle."]
  for cycle in cycles:
    lines += _cycle_lines(cycle, graph)
  if len(cycles) >= MAX_CYCLES:
    lines.append(f"  (stopped after {MAX_CYCLES} circles; break these first)")
  return "\n".join(lines)


# Rule 2: file length.


def long_files(root: pathlib.Path, limit: int = MAX_LINES) -> list[tuple[str, int]]:
  """(path, line count) of every source file under root/mpl_jax longer than limit lines."""
  counts = ((_rel(root, p), len(p.read_text().splitlines()))
            for p in _python_files(root, PACKAGE))
  return [(path, n) for path, n in counts if n > limit]


def long_files_message(found: list[tuple[str, int]]) -> str:
  lines = [f"{len(found)} file(s) in {PACKAGE}/ longer than {MAX_LINES} lines. Split each by "
           "responsibility into smaller modules (and keep the split free of import circles):"]
  lines += [f"  {path}: {n} lines" for path, n in found]
  return "\n".join(lines)


# Rule 3: methods chosen by string.


def _is_string(node: ast.AST, value: str | None = None) -> bool:
  return (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and (value is None or node.value == value))


def _is_strings(node: ast.AST) -> bool:
  """Whether node is a string constant or a non-empty tuple, list or set of them."""
  if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
    return bool(node.elts) and all(_is_string(e) for e in node.elts)
  return _is_string(node)


def _reads(node: ast.AST, fields: tuple[str, ...]) -> bool:
  """Whether node reads one of `fields`: `f`, `x.f`, `x["f"]`, `x.get("f")`."""
  if isinstance(node, ast.Name):
    return node.id in fields
  if isinstance(node, ast.Attribute):
    return node.attr in fields
  if isinstance(node, ast.Subscript):
    return any(_is_string(node.slice, f) for f in fields)
  return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == "get" and bool(node.args)
          and any(_is_string(node.args[0], f) for f in fields))


def _is_method(node: ast.AST) -> bool:
  """Whether node reads a method: `method`, `x.method`, `x["method"]`, `x.get("method")`."""
  return _reads(node, ("method",))


def _chooses(node: ast.Compare, fields: tuple[str, ...]) -> bool:
  operands = [node.left, *node.comparators]
  return any(isinstance(op, _CHOICE_OPS) and (
      (_reads(a, fields) and _is_strings(b)) or (_is_strings(a) and _reads(b, fields)))
             for op, a, b in zip(node.ops, operands, operands[1:]))


def _chooses_method(node: ast.Compare) -> bool:
  return _chooses(node, ("method",))


def _string_pattern(pattern: ast.pattern) -> bool:
  """Whether a `case` pattern matches a string: `"mpl"`, `"a" | "b"`, `"mpl" as m`."""
  if isinstance(pattern, ast.MatchValue):
    return _is_string(pattern.value)
  if isinstance(pattern, ast.MatchOr):
    return any(_string_pattern(p) for p in pattern.patterns)
  return isinstance(pattern, ast.MatchAs) and pattern.pattern is not None and _string_pattern(
      pattern.pattern)


def _matches(node: ast.Match, fields: tuple[str, ...]) -> bool:
  """`match <field>:` with a `case` on a string."""
  return _reads(node.subject, fields) and any(_string_pattern(c.pattern) for c in node.cases)


def _matches_method(node: ast.Match) -> bool:
  return _matches(node, ("method",))


def string_choices(root: pathlib.Path, fields: tuple[str, ...], registry: str
                   ) -> list[tuple[str, int, str]]:
  """(path, line, source) of every comparison of one of `fields` with strings, or `match`
  of one against strings, outside `registry` (in METHOD_CHOICE_PATHS)."""
  found = []
  for rel in METHOD_CHOICE_PATHS:
    for path in _python_files(root, rel):
      if _rel(root, path) == registry:
        continue
      source = path.read_text()
      for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Compare) and _chooses(node, fields):
          text = _one_line(ast.get_source_segment(source, node) or "")
          found.append((_rel(root, path), node.lineno, text))
        elif isinstance(node, ast.Match) and _matches(node, fields):
          subject = _one_line(ast.get_source_segment(source, node.subject) or "")
          found.append((_rel(root, path), node.lineno, f"match {subject}"))
  return sorted(found)


def method_choices(root: pathlib.Path) -> list[tuple[str, int, str]]:
  """Methods chosen by string outside the method registry."""
  return string_choices(root, ("method",), REGISTRY)


def estimator_choices(root: pathlib.Path) -> list[tuple[str, int, str]]:
  """Estimators, rewards or student updates chosen by string outside their registry."""
  return string_choices(root, ESTIMATOR_FIELDS, ESTIMATOR_REGISTRY)


def method_choices_message(found: list[tuple[str, int, str]]) -> str:
  lines = [f"{len(found)} method(s) chosen by string outside {REGISTRY}. Move each choice into "
           f"{REGISTRY} (a property or function of the method's entry there) and ask the "
           "registry here instead of comparing names:"]
  lines += [f"  {path}:{line}: {text}" for path, line, text in found]
  return "\n".join(lines)


def estimator_choices_message(found: list[tuple[str, int, str]]) -> str:
  lines = [f"{len(found)} estimator, reward or student update choice(s) by string outside "
           f"{ESTIMATOR_REGISTRY}. Resolve the name once there (`estimators.settings`) and "
           "ask its entry (`deps.mpl.estimator`, `.reward`, `.student_update`) instead:"]
  lines += [f"  {path}:{line}: {text}" for path, line, text in found]
  return "\n".join(lines)


# Rule 4: step functions jitted outside the compiled-step module.


def step_function_names(root: pathlib.Path) -> set[str]:
  """STEP_NAMES and the functions of mpl_jax/steps/ taking (state, batch, rng, ...)."""
  names = set(STEP_NAMES)
  for path in _python_files(root, STEPS_PACKAGE):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        if [a.arg for a in node.args.args[:3]] == ["state", "batch", "rng"]:
          names.add(node.name)
  return names


def _is_jit(node: ast.AST) -> bool:
  """`jax.jit` or `jit`, also called with options or through `functools.partial` (as
  decorators are written)."""
  if isinstance(node, ast.Call):
    partial = isinstance(node.func, (ast.Name, ast.Attribute)) and (
        getattr(node.func, "id", None) == "partial" or getattr(node.func, "attr", None) ==
        "partial")
    return _is_jit(node.args[0]) if partial and node.args else _is_jit(node.func)
  return (isinstance(node, ast.Name) and node.id == "jit") or (
      isinstance(node, ast.Attribute) and node.attr == "jit")


def _names_in(node: ast.AST) -> set[str]:
  return {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
          if isinstance(n, (ast.Name, ast.Attribute))}


def step_jits(root: pathlib.Path) -> list[tuple[str, int, str]]:
  """(path, line, source) of every jit of a step function outside COMPILED."""
  steps = step_function_names(root)
  found = []
  for rel in METHOD_CHOICE_PATHS:
    for path in _python_files(root, rel):
      if _rel(root, path) == COMPILED:
        continue
      source = path.read_text()
      for node in ast.walk(ast.parse(source, filename=str(path))):
        if (isinstance(node, ast.Call) and _is_jit(node.func) and node.args
            and _names_in(node.args[0]) & steps):
          found.append((_rel(root, path), node.lineno,
                        _one_line(ast.get_source_segment(source, node) or "")))
        elif (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
              and any(_is_jit(d) for d in node.decorator_list)
              and (node.name in steps
                   or [a.arg for a in node.args.args[:3]] == ["state", "batch", "rng"])):
          line = min(d.lineno for d in node.decorator_list if _is_jit(d))
          found.append((_rel(root, path), line, f"@jit def {node.name}"))
  return sorted(found)


def step_jits_message(found: list[tuple[str, int, str]]) -> str:
  lines = [f"{len(found)} step function(s) jitted outside {COMPILED}. Take the compiled step "
           "from `mpl_jax.compiled.Compiled` (its `step`, `init`, `lower`), so that what "
           "runs here is what trains:"]
  lines += [f"  {path}:{line}: {text}" for path, line, text in found]
  return "\n".join(lines)


# The rules on this checkout.


def test_package_has_no_import_circles():
  cycles = import_cycles(ROOT)
  if cycles:
    pytest.fail(cycles_message(cycles, import_graph(ROOT)), pytrace=False)


def test_package_files_are_at_most_400_lines():
  found = long_files(ROOT)
  if found:
    pytest.fail(long_files_message(found), pytrace=False)


def test_methods_are_chosen_only_in_the_registry():
  found = method_choices(ROOT)
  if found:
    pytest.fail(method_choices_message(found), pytrace=False)


def test_estimators_are_chosen_only_in_their_registry():
  found = estimator_choices(ROOT)
  if found:
    pytest.fail(estimator_choices_message(found), pytrace=False)


def test_steps_are_jitted_only_in_the_compiled_step_module():
  found = step_jits(ROOT)
  if found:
    pytest.fail(step_jits_message(found), pytrace=False)


# The rules on small synthetic trees.


def _write_tree(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
  for rel, text in files.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)
  return root


def test_lazy_import_inside_a_function_closes_a_circle(tmp_path):
  _write_tree(tmp_path, {
      "mpl_jax/__init__.py": "",
      "mpl_jax/a.py": "from mpl_jax import b\n",
      "mpl_jax/b.py": "import os\n\n\ndef f():\n  from mpl_jax import a\n  return a\n",
  })
  cycles = import_cycles(tmp_path)
  assert [[(i.source, i.target, i.path, i.line) for i in c] for c in cycles] == [[
      ("mpl_jax.a", "mpl_jax.b", "mpl_jax/a.py", 1),
      ("mpl_jax.b", "mpl_jax.a", "mpl_jax/b.py", 5),
  ]]
  message = cycles_message(cycles, import_graph(tmp_path))
  assert "mpl_jax.a -> mpl_jax.b -> mpl_jax.a" in message
  assert "mpl_jax/b.py:5 (in a function): from mpl_jax import a" in message


def test_chain_without_circle_is_clean(tmp_path):
  _write_tree(tmp_path, {
      "mpl_jax/__init__.py": "from mpl_jax import a\n",
      "mpl_jax/a.py": "from mpl_jax import b\n",
      "mpl_jax/b.py": "def f():\n  from mpl_jax.sub import c\n",
      "mpl_jax/sub/__init__.py": "",
      "mpl_jax/sub/c.py": "import numpy\n",
  })
  assert import_cycles(tmp_path) == []


def test_package_and_its_submodule_importing_each_other_is_a_circle(tmp_path):
  _write_tree(tmp_path, {  # a package and its submodule importing each other
      "mpl_jax/__init__.py": "",
      "mpl_jax/data/__init__.py": "def load():\n  from mpl_jax.data import images\n",
      "mpl_jax/data/images.py": "def f():\n  from mpl_jax import data as data_lib\n",
      "mpl_jax/data/other.py": "if TYPE_CHECKING:\n  from mpl_jax.data import SOME_NAME\n",
  })
  cycles = [[i.source for i in c] for c in import_cycles(tmp_path)]
  assert cycles == [["mpl_jax.data", "mpl_jax.data.images"]]


def test_submodule_has_no_implicit_edge_to_its_package(tmp_path):
  _write_tree(tmp_path, {
      "mpl_jax/__init__.py": "",
      "mpl_jax/data/__init__.py": "from mpl_jax.data import digits\n",
      "mpl_jax/data/digits.py": "from mpl_jax.data import splits\n",
      "mpl_jax/data/splits.py": "",
  })
  assert import_graph(tmp_path)["mpl_jax.data.digits"].keys() == {"mpl_jax.data.splits"}
  assert import_cycles(tmp_path) == []


@pytest.mark.parametrize("statement, targets", [
    ("import mpl_jax.sub.y", {"mpl_jax.sub.y"}),
    ("import mpl_jax", {"mpl_jax"}),
    ("from mpl_jax import x, sub", {"mpl_jax.x", "mpl_jax.sub"}),
    ("from mpl_jax import VALUE", {"mpl_jax"}),
    ("from mpl_jax.sub import y", {"mpl_jax.sub.y"}),
    ("from mpl_jax.sub import NAME", {"mpl_jax.sub"}),
    ("from . import y", {"mpl_jax.sub.y"}),
    ("from .y import thing", {"mpl_jax.sub.y"}),
    ("from .. import x", {"mpl_jax.x"}),
    ("from ..x import thing", {"mpl_jax.x"}),
    ("import typing\nif typing.TYPE_CHECKING:\n  from mpl_jax import x", {"mpl_jax.x"}),
    ("class C:\n  def f(self):\n    import mpl_jax.x", {"mpl_jax.x"}),
    ("import numpy\nfrom os import path\nfrom mpl_jax_other import x", set()),
])
def test_import_forms_resolve_to_modules(tmp_path, statement, targets):
  _write_tree(tmp_path, {
      "mpl_jax/__init__.py": "VALUE = 1\n",
      "mpl_jax/x.py": "",
      "mpl_jax/sub/__init__.py": "NAME = 1\n",
      "mpl_jax/sub/y.py": "",
      "mpl_jax/sub/z.py": statement + "\n",
  })
  assert import_graph(tmp_path)["mpl_jax.sub.z"].keys() == targets


def test_strongly_connected_components():
  graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": ["d"], "f": ["a"]}
  components = sorted(strongly_connected(graph))
  assert components == [["a", "b", "c"], ["d", "e"], ["f"]]


def test_file_over_the_limit_is_flagged(tmp_path):
  _write_tree(tmp_path, {
      "mpl_jax/__init__.py": "",
      "mpl_jax/sub/long.py": "x = 1\n" * (MAX_LINES + 1),
      "mpl_jax/at_limit.py": "x = 1\n" * MAX_LINES,
      "tools/long_tool.py": "x = 1\n" * (MAX_LINES + 1),  # only mpl_jax/ is limited
  })
  assert long_files(tmp_path) == [("mpl_jax/sub/long.py", MAX_LINES + 1)]
  assert "mpl_jax/sub/long.py: 401 lines" in long_files_message(long_files(tmp_path))


@pytest.mark.parametrize("code, text", [
    ('if config.method == "mpl":\n  pass', 'config.method == "mpl"'),
    ('x = method in ("mpl", "uda")', 'method in ("mpl", "uda")'),
    ('x = saved["method"] != "mpl"', 'saved["method"] != "mpl"'),
    ('x = saved.get("method") not in [\n    "a", "b"]', 'saved.get("method") not in [ "a", "b"]'),
    ('x = "mpl" == config.method', '"mpl" == config.method'),
    ('x = 0 < n and config.method in {"mpl"}', 'config.method in {"mpl"}'),
    ('match config.method:\n  case "mpl":\n    pass', 'match config.method'),
    ('match method:\n  case None:\n    pass\n  case "a" | "b":\n    pass', 'match method'),
])
def test_method_compared_with_strings_is_flagged(tmp_path, code, text):
  _write_tree(tmp_path, {"mpl_jax/mod.py": f"# a comment\n{code}\n"})
  assert method_choices(tmp_path) == [("mpl_jax/mod.py", 2, text)]


@pytest.mark.parametrize("code", [
    'if config.model.name == "mlp":\n  pass',
    'x = saved.get("method") != current["method"]',
    'x = config.method is None',
    'x = config.method == other',
    'x = methods == ("mpl",)',
    'x = method in (name, "mpl")',
    'x = config.method < "z"',
    'match config.method:\n  case None:\n    pass\n  case other:\n    pass',
    'match config.model.name:\n  case "wrn":\n    pass',
])
def test_other_comparisons_are_not_flagged(tmp_path, code):
  _write_tree(tmp_path, {"mpl_jax/mod.py": code + "\n"})
  assert method_choices(tmp_path) == []


def test_method_choice_paths(tmp_path):
  choice = 'x = config.method == "mpl"\n'
  _write_tree(tmp_path, {
      "mpl_jax/methods.py": choice,  # the registry
      "configs/digits.py": choice,  # experiment settings per method
      "tests/some_test.py": choice,
      "main.py": choice,
      "tools/t.py": choice,
      "benchmarks/b.py": choice,
      "experiments/e.py": choice,
      "mpl_jax/sub/deep.py": choice,
  })
  assert [path for path, _, _ in method_choices(tmp_path)] == [
      "benchmarks/b.py", "experiments/e.py", "main.py", "mpl_jax/sub/deep.py", "tools/t.py"]
  message = method_choices_message(method_choices(tmp_path))
  assert "main.py:1: config.method == \"mpl\"" in message
  assert "Move each choice into mpl_jax/methods.py" in message


@pytest.mark.parametrize("code, text", [
    ('if config.mpl.estimator == "meta":\n  pass', 'config.mpl.estimator == "meta"'),
    ('x = mpl.reward != "taylor"', 'mpl.reward != "taylor"'),
    ('x = case.student_update in ("real", "plain")', 'case.student_update in ("real", "plain")'),
    ('x = "dot" == saved["reward"]', '"dot" == saved["reward"]'),
    ('match estimator:\n  case "off":\n    pass', 'match estimator'),
])
def test_estimator_compared_with_strings_is_flagged(tmp_path, code, text):
  _write_tree(tmp_path, {"benchmarks/b.py": f"# a comment\n{code}\n",
                         "mpl_jax/estimators.py": code + "\n",  # the registry
                         "tests/t_test.py": code + "\n"})
  assert estimator_choices(tmp_path) == [("benchmarks/b.py", 2, text)]
  assert "benchmarks/b.py:2:" in estimator_choices_message(estimator_choices(tmp_path))


@pytest.mark.parametrize("code", [
    'x = mpl.estimator is None',
    'x = mpl.estimator == other',
    'x = mpl.estimator.accumulates',
    'x = config.mpl.labels == "soft"',
    'x = case.estimator in estimators.ESTIMATORS',
])
def test_other_estimator_reads_are_not_flagged(tmp_path, code):
  _write_tree(tmp_path, {"mpl_jax/mod.py": code + "\n"})
  assert estimator_choices(tmp_path) == []


STEPS_MODULE = "def mpl_step(state, batch, rng, *, deps):\n  return state\n"


@pytest.mark.parametrize("code, text", [
    ("f = jax.jit(mpl_steps.mpl_step)", "jax.jit(mpl_steps.mpl_step)"),
    ("f = jax.jit(functools.partial(mpl_step, deps=d), donate_argnums=(0,))",
     "jax.jit(functools.partial(mpl_step, deps=d), donate_argnums=(0,))"),
    ("f = jax.jit(jax.vmap(guards.guard_step(p.step_fn, skip_nonfinite=False)))",
     "jax.jit(jax.vmap(guards.guard_step(p.step_fn, skip_nonfinite=False)))"),
    ("f = jit(phase.step_fn)", "jit(phase.step_fn)"),
    ("f = jax.jit(step, in_shardings=s).lower(a, b, c)", "jax.jit(step, in_shardings=s)"),
    ("@jax.jit\ndef my_update(state, batch, rng):\n  return state", "@jit def my_update"),
    ("@functools.partial(jax.jit, donate_argnums=0)\ndef mpl_step(state, b, r):\n  pass",
     "@jit def mpl_step"),
])
def test_step_jitted_outside_the_compiled_module_is_flagged(tmp_path, code, text):
  _write_tree(tmp_path, {"mpl_jax/steps/mpl.py": STEPS_MODULE,
                         "tools/t.py": f"# a comment\n{code}\n",
                         "mpl_jax/compiled.py": code + "\n",  # the one home of the jit
                         "tests/t_test.py": code + "\n"})  # tests may jit what they test
  assert step_jits(tmp_path) == [("tools/t.py", 2, text)]
  assert "tools/t.py:2:" in step_jits_message(step_jits(tmp_path))


@pytest.mark.parametrize("code", [
    "f = jax.jit(lambda key: key, out_shardings=replicated)",
    "f = jax.jit(functools.partial(_teacher_forward_backward, deps))",
    "f = jax.jit(tx.init)(params)",
    "f = jax.vmap(mpl_step)",
    "@jax.jit\ndef counts(params, model_state, x, y, mask):\n  pass",
])
def test_other_jits_are_not_flagged(tmp_path, code):
  _write_tree(tmp_path, {"mpl_jax/steps/mpl.py": STEPS_MODULE, "benchmarks/b.py": code + "\n"})
  assert step_jits(tmp_path) == []
