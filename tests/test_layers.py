"""The house is one-way: every import inside ``lsync/`` points down the layers, no stage imports another stage,
and no set of modules imports itself in a circle.

``LAYERS`` is the one written-down order, top first. A module belongs to the entry that is the longest prefix of
its dotted name. Imports are read from the source (module level and inside functions alike), so an import that
is only executed on some code path still counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lsync"

#: Top first. Modules in the same entry may import each other (no circles); anything else only imports entries
#: below its own.
LAYERS: list[tuple[str, ...]] = [
    ("lsync.__main__",),
    ("lsync.cli",),
    ("lsync.commands", "lsync.app"),  # click commands and the web page: parse options, call a stage
    ("lsync.pipeline", "lsync.summary"),  # recipes chain commands; `lsync inspect` reads any output folder
    ("lsync.stages",),  # one run(config) orchestration per stage, plus its private sub-modules (stage_*.py)
    # shared by several stages: the chunk sampler, sync scores, eval result folders, --face-select, synthetic data
    ("lsync.sampling", "lsync.sync_metrics", "lsync.eval_results", "lsync.face_select", "lsync.synth"),
    ("lsync.data",),  # datasets draw samples with the trainer's sample keys and seeded generators
    ("lsync.training", "lsync.losses"),
    ("lsync.models",),
    ("lsync.weights", "lsync.diffusion"),  # where released weights live; the noise schedules
    ("lsync.audio", "lsync.face", "lsync.media"),
    ("lsync.checkpoints", "lsync.manifest", "lsync.config", "lsync.package_data"),  # files on disk
    ("lsync.cli_options", "lsync.console", "lsync.errors", "lsync"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Every ``lsync`` module that ``name`` imports anywhere in its source (``from pkg import submodule`` counts
    as the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "lsync"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lsync":
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in known else target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def layer_of(name: str) -> tuple[int, str]:
    """(layer index, the LAYERS entry) of a module: the longest matching prefix."""
    best = None
    for index, entries in enumerate(LAYERS):
        for entry in entries:
            if name == entry or name.startswith(entry + "."):
                if best is None or len(entry) > len(best[1]):
                    best = (index, entry)
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")
    return best


def stage_owner(name: str, stages: set[str]) -> str:
    """The stage a stage module belongs to: itself, or the stage whose private sub-module it is
    (``lsync.stages.infer_render`` belongs to ``lsync.stages.infer``)."""
    owners = [s for s in stages if name == s or name.startswith(s + "_")]
    return min(owners, key=len)


def arrow_problem(source: str, target: str, stages: set[str]) -> str | None:
    (source_layer, _), (target_layer, _) = layer_of(source), layer_of(target)
    if target_layer < source_layer:
        return "points up"
    if source in stages and target in stages and stage_owner(source, stages) != stage_owner(target, stages):
        return "joins two stages"
    return None


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_module_has_a_layer(graph):
    for name in graph:
        layer_of(name)


def test_no_import_points_up_or_joins_two_stages(graph):
    stages = {name for name in graph if name.startswith("lsync.stages.")}
    problems = [f"{source} -> {target} ({problem})" for source, targets in sorted(graph.items())
                for target in sorted(targets) if (problem := arrow_problem(source, target, stages))]
    assert not problems, "imports against the layers (see LAYERS):\n" + "\n".join(problems)


def test_no_modules_import_each_other_in_a_circle(graph):
    assert not circles(graph)


def test_the_checks_catch_what_they_are_for():
    """The rules themselves: an upward arrow, a stage-to-stage arrow and a circle are found; a stage's private
    sub-module is not another stage."""
    stages = {"lsync.stages.infer", "lsync.stages.infer_render", "lsync.stages.eval_sync"}
    assert arrow_problem("lsync.models.vae", "lsync.stages.infer", stages) == "points up"
    assert arrow_problem("lsync.stages.eval_sync", "lsync.stages.infer", stages) == "joins two stages"
    assert arrow_problem("lsync.stages.infer", "lsync.stages.infer_render", stages) is None
    assert arrow_problem("lsync.stages.infer", "lsync.models.vae", stages) is None
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
