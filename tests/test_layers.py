"""The layering of DESIGN §2, checked: imports flow downward only (exc <- operators <- imaging <-
io <- mock <- flow <- plots, cli), with one written exception (the dataset model's ``from_fits`` /
``output_to_fits`` reach ``pipeline.io.fits`` at call time), and importing the numerical core
loads no storage or cluster library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

# lower rank = lower layer; a module imports (at module level) only from its own rank or below
RANKS = {
    "pipeline.exc": 0,
    "pipeline.operators": 1,
    "pipeline.imaging": 2,
    "pipeline.io": 3,
    "pipeline.mock": 4,  # simulated surveys are written to FITS through pipeline.io.fits
    "pipeline.interop": 4,  # autoarray bridges; autoarray itself is imported when called
    "pipeline.flow": 5,
    "pipeline.plots": 6,
    "pipeline.docs_reference": 6,
    "pipeline.cli": 7,
}
# the one written exception: FITS I/O for the dataset model, loaded when called
CALL_TIME_EXCEPTIONS = {("pipeline.imaging", "pipeline.io.fits")}
FIT_FUNCTIONS = {"from_fits", "output_to_fits"}
HEAVY = ("zarr", "fsspec", "numcodecs", "dask", "distributed")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(name: str) -> int | None:
    for prefix, value in sorted(RANKS.items(), key=lambda item: -len(item[0])):
        if name == prefix or name.startswith(prefix + "."):
            return value
    return None


def layer(name: str) -> str | None:
    return next((p for p in RANKS if name == p or name.startswith(p + ".")), None)


def imported(node: ast.AST, module: str) -> list[str]:
    """The pipeline modules an import statement names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "pipeline"]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".")[: -node.level] if node.level else []
            base = ".".join([*package, base] if base else package)
        return [base] if base.split(".")[0] == "pipeline" else []
    return []


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(tree: ast.Module) -> list[ast.AST]:
    """Import statements run when the module is imported (not inside functions or classes'
    methods, not under ``if TYPE_CHECKING``)."""
    found, stack = [], list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and not is_type_checking(node):
            stack += node.body + node.orelse
        elif isinstance(node, ast.Try):
            stack += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                stack += handler.body
        elif isinstance(node, ast.ClassDef):
            stack += [n for n in node.body if not isinstance(n, ast.FunctionDef)]
    return found


def sources() -> list[tuple[str, ast.Module]]:
    return [
        (module_name(path), ast.parse(path.read_text(), filename=str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def test_every_module_has_a_layer():
    unplaced = [name for name, _ in sources() if name != "pipeline" and rank(name) is None]
    assert unplaced == []


def test_module_level_imports_flow_downward():
    upward = []
    for name, tree in sources():
        own = rank(name)
        for node in module_level_imports(tree):
            for target in imported(node, name):
                if target == "pipeline":  # the lazy front door: never from inside
                    upward.append(f"{name} imports the package root")
                    continue
                theirs = rank(target)
                if own is None or theirs is None or theirs > own:
                    upward.append(f"{name} (line {node.lineno}) imports {target}")
    assert upward == []


def test_call_time_imports_upward_are_only_the_fits_delegations():
    found = []
    for name, tree in sources():
        own = rank(name)
        if own is None or own > RANKS["pipeline.imaging"]:
            continue
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                for target in imported(node, name):
                    if rank(target) is not None and rank(target) > own:
                        allowed = (layer(name), target) in CALL_TIME_EXCEPTIONS
                        if not (allowed and function.name in FIT_FUNCTIONS):
                            found.append(f"{name}.{function.name} imports {target}")
    assert found == []
    # and the exception is real: the dataset model does delegate to pipeline.io.fits
    text = (PACKAGE / "imaging" / "dataset.py").read_text()
    assert "from pipeline.io.fits import" in text


@pytest.mark.parametrize(
    "modules", ["pipeline", "pipeline.imaging", "pipeline.operators", "pipeline.exc"]
)
def test_the_numerical_core_loads_no_storage_or_cluster_library(modules):
    code = (
        f"import sys, {modules}\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_the_front_door_still_serves_every_public_name():
    code = (
        "import sys, pipeline as lp\n"
        "names = [n for n in lp.__all__ if n != '__version__']\n"
        "assert all(getattr(lp, n) is not None for n in names)\n"
        "assert lp.Imaging.__module__ == 'pipeline.imaging.dataset'\n"
        "assert lp.open_imaging.__module__.startswith('pipeline.io.store')\n"
        "print(lp.__version__, 'zarr' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    from importlib.metadata import version

    assert done.stdout.split() == [version("lenspipe"), "True"]


def test_every_public_name_has_one_home():
    import pipeline

    lazy = set(pipeline._HOMES) | {"exc", "__version__"}
    assert set(pipeline.__all__) == lazy


STORE = "pipeline.io.store"
# what naming a store node looks like: Zarr group/array calls and attributes
ZARR_NODE_CALLS = {"require_group", "create_group", "create_array", "require_array", "attrs"}


# dataset attribute keys distinctive enough that no other mapping of lenspipe uses them: code
# outside the store reads them as DatasetRecord fields, never as keys
ATTRIBUTE_KEYS = {"settings_hash", "n_batches", "batches_done", "sources", "token"}


def _outside_the_store() -> list[tuple[str, ast.Module]]:
    return [(n, t) for n, t in sources() if not (n == STORE or n.startswith(STORE + "."))]


def _store_node_names() -> set[str]:
    from pipeline.io.store import schema

    names = {schema.DATASETS, schema.RUNS, schema.OPERATOR_GROUP, *schema.OPERATOR_ARRAYS}
    names |= {schema.LAST_RUN_ATTR, schema.MARKERS_NODE.rsplit("/", 1)[-1]}
    return names


def test_only_the_store_imports_zarr():
    found = []
    for name, tree in _outside_the_store():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                targets = [node.module or ""]
            else:
                continue
            found += [
                f"{name} (line {node.lineno}) imports {t}"
                for t in targets
                if t.split(".")[0] == "zarr"
            ]
    assert found == []


def test_nothing_outside_the_store_names_a_store_node():
    nodes = _store_node_names()
    assert {"datasets", "sparse_operator/values", "batches_done", "last_run"} <= nodes
    found = []
    for name, tree in _outside_the_store():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ZARR_NODE_CALLS:
                found.append(f"{name} (line {node.lineno}) uses .{node.attr}")
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and node.slice.value in nodes
            ):
                found.append(f"{name} (line {node.lineno}) indexes [{node.slice.value!r}]")
            elif (
                isinstance(node, ast.Constant) and isinstance(node.value, str) and "/" in node.value
            ):
                if node.value in nodes:
                    found.append(f"{name} (line {node.lineno}) spells {node.value!r}")
    assert found == []


def _key_lookups(tree: ast.Module, keys: set[str]) -> list[tuple[int, str]]:
    """(line, key) of every ``x[key]`` and ``x.get(key, ...)`` with a constant key in ``keys``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            key = node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            key = node.args[0]
        else:
            continue
        if isinstance(key, ast.Constant) and key.value in keys:
            found.append((node.lineno, key.value))
    return found


def test_nothing_outside_the_store_reads_a_dataset_attribute_by_key():
    found = [
        f"{name} (line {line}) reads [{key!r}]"
        for name, tree in _outside_the_store()
        for line, key in _key_lookups(tree, ATTRIBUTE_KEYS)
    ]
    assert found == []


def test_the_attribute_key_check_finds_a_key_lookup():
    tree = ast.parse("a = attrs['sources']\nb = attrs.get('token')\nc = attrs.get(key)\n")
    assert _key_lookups(tree, ATTRIBUTE_KEYS) == [(1, "sources"), (2, "token")]
