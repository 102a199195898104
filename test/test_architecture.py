"""Rules that keep the layout honest: the core stays free of ROS, the node free of TensorFlow."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def python_files(package: str, exclude: str = "") -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    return [f for f in files if not (exclude and exclude in f.relative_to(ROOT).parts)]


ROS_MODULES = {"rclpy", "sensor_msgs", "std_msgs", "vision_msgs", "diagnostic_msgs", "geometry_msgs",
               "rcl_interfaces", "builtin_interfaces", "launch", "launch_ros"}


@pytest.mark.parametrize("path", python_files("perception_core"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_never_imports_ros(path):
    assert not imported_modules(path) & ROS_MODULES, f"{path} imports ROS"


@pytest.mark.parametrize("path", python_files("perception_core", exclude="training") + python_files("perception_nodes"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_tensorflow_only_in_training(path):
    assert not imported_modules(path) & {"tensorflow", "keras", "tf2onnx"}, f"{path} imports TensorFlow"


def test_the_check_can_fail(tmp_path):
    offender = tmp_path / "offender.py"
    offender.write_text("def f():\n    from rclpy.node import Node\n    return Node\n")
    assert "rclpy" in imported_modules(offender)


@pytest.mark.parametrize("path", python_files("perception_core") + python_files("perception_nodes"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_syntax_is_python_3_10(path):
    """The robot's ROS 2 Jazzy runs Python 3.10+ even though the dev venv may be newer."""
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))


# Layers of perception_core, lowest first: a module may import its own layer and the ones below,
# never one above. Longest matching prefix wins; every module must match one.
LAYERS = {
    "perception_core.types": 0, "perception_core.codec": 0, "perception_core.datasets.spec": 0,
    "perception_core.resources": 0,
    "perception_core.pipeline": 1, "perception_core.engines": 1, "perception_core.model_spec": 1,
    "perception_core.macs": 1,
    "perception_core.message_readers": 1, "perception_core.visualize": 1,
    "perception_core.metrics": 2,
    "perception_core.datasets": 3, "perception_core.sim": 3,
    "perception_core.evaluation": 4, "perception_core.profiling": 4, "perception_core.bench": 4,
    "perception_core.training": 4, "perception_core.__main__": 4, "perception_core.plotting": 4,
    "perception_core.fleet_bench": 4,
    "perception_core": 0,  # the package's own __init__
}
LAYER_NAMES = ("types/codec", "pipeline/engines", "metrics", "datasets", "applications")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    assert matches, f"{module} has no layer in LAYERS"
    return LAYERS[max(matches, key=len)]


def core_imports(path: Path, modules: set[str]) -> set[str]:
    """perception_core modules that ``path`` imports, anywhere in the file (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:  # "pkg.mod.func" -> "pkg.mod"
                name = name.rpartition(".")[0]
            if name and name.startswith("perception_core"):
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in python_files("perception_core")}
    return {module: core_imports(path, set(paths)) - {module} for module, path in paths.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} ({LAYER_NAMES[layer_of(m)]}) imports {d} ({LAYER_NAMES[layer_of(d)]})"
            for m, deps in sorted(graph.items()) for d in sorted(deps)
            if layer_of(d) > layer_of(m) and not m.startswith(d + ".")]


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for d in graph.get(m, ()):
            if d not in index:
                visit(d)
                low[m] = min(low[m], low[d])
            elif d in on_stack:
                low[m] = min(low[m], index[d])
        if low[m] == index[m]:
            component = []
            while True:
                d = stack.pop()
                on_stack.discard(d)
                component.append(d)
                if d == m:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return cycles


def test_core_layers_point_one_way():
    assert layer_violations(import_graph()) == []


def test_core_has_no_import_cycles():
    assert import_cycles(import_graph()) == []


def test_the_layer_checks_can_fail():
    graph = {"perception_core.types": {"perception_core.metrics.detection"},
             "perception_core.metrics.detection": {"perception_core.types"}}
    assert layer_violations(graph) and import_cycles(graph) == [sorted(graph)]


@pytest.mark.parametrize("path", python_files("perception_core"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_never_imports_runs_or_spawns_node_code(path):
    """No import, and no string naming node code (``python -m perception_nodes...``) outside docstrings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and id(n) not in docstrings]
    assert "perception_nodes" not in imported_modules(path), path
    assert not [s for s in strings if "perception_nodes" in s], f"{path} names node code in a string"


@pytest.mark.parametrize("path", [p for p in python_files("perception_core") if "evaluation" in p.parts
                                  or p.name in ("bag.py", "message_readers.py")], ids=lambda p: p.name)
def test_reading_a_bag_never_imports_the_renderer(path):
    if "record" in path.name:  # recording the simulator into a bag renders, by definition
        return
    graph, seen, todo = import_graph(), set(), [module_name(path)]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    assert not any(m.startswith("perception_core.sim") for m in seen), f"{path.name} reaches the simulator"


def string_constants(path: Path) -> list[str]:
    """String literals of a module, docstrings left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


# Modules that film or record the simulator, and so may use its label set (never spell it out).
SIM_SPEC_USERS = {"perception_core/datasets/simulator.py", "perception_core/evaluation/record.py",
                  "perception_nodes/synthetic_camera_node.py"}


@pytest.mark.parametrize("path", [p for p in python_files("perception_core") + python_files("perception_nodes")
                                  if "sim" not in p.relative_to(ROOT).parts], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_outside_sim_knows_the_simulators_classes(path):
    from perception_core.sim.classes import SIM_SPEC

    names = set(SIM_SPEC.seg_classes) | set(SIM_SPEC.det_classes)
    assert not names & set(string_constants(path)), f"{path} names the simulator's classes"
    source = path.read_text()
    assert not any(f in source for f in ("SEG_CLASSES", "DET_CLASSES", "SEG_COLORS_BGR")), path
    if "SIM_SPEC" in source:
        assert str(path.relative_to(ROOT)) in SIM_SPEC_USERS, f"{path} uses the simulator's label set"
