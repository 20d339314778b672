"""Recipes that chain stages: ``lsync pipeline run RECIPE.yaml [--workdir DIR]``.

A recipe is YAML::

    workdir: lsync-demo            # default working directory ({workdir} in the steps)
    vars:                          # named values ({clips} in the steps); `--var clips=4` overrides one
      clips: 12
    steps:
      - name: data
        run: [preprocess, "{workdir}/raw", "{workdir}/data", --resolution, 64]
        output: "{workdir}/data"   # the manifest directory the step makes
        metric: summary.clips      # what the final table shows (a dotted path into its lsync.json)

Each step is an ``lsync`` command line, run in this process. Before running it, the runner computes the
step's *key*: a digest of its resolved arguments and of the ``lsync.json`` of every earlier step's output it
names. A step whose output is complete (``lsync.json`` present) and whose key equals the one recorded when
it last finished is skipped, so rerunning a recipe resumes it and a finished recipe is a no-op. Keys are
kept in ``<workdir>/.lsync-pipeline/<step>.json``. Variables are substituted before keys are computed, so a
changed ``--var`` reruns exactly the steps that use it (and those downstream of them).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsync.console import get_logger
from lsync.errors import ConfigError, LsyncError, StageFailure
from lsync.manifest import MANIFEST_NAME, atomic_write_json, directory_digest, is_complete, json_digest

log = get_logger(__name__)
STATE_DIR = ".lsync-pipeline"


@dataclass
class Step:
    name: str
    run: list[str]
    output: Path
    metric: str | None = None


@dataclass
class StepResult:
    name: str
    status: str  # "done", "skipped" or "failed"
    seconds: float
    metric: Any = None
    output: str = ""
    error: str | None = None


@dataclass
class Recipe:
    path: Path
    workdir: Path
    steps: list[Step] = field(default_factory=list)


def load_recipe(path: str | Path, workdir: str | Path | None = None,
                variables: dict[str, str] | None = None) -> Recipe:
    """Read and validate a recipe; ``{workdir}`` and ``{var}`` in arguments and outputs are substituted.

    ``variables`` override the recipe's ``vars:`` defaults; naming one the recipe does not declare is an error.
    """
    from lsync.config import load_yaml

    recipe_path = Path(path)
    data = load_yaml(recipe_path)
    unknown = set(data) - {"workdir", "steps", "description", "vars"}
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {recipe_path}", "use workdir, vars, steps, description")
    root = Path(workdir or data.get("workdir") or "lsync-pipeline")
    values = _variables(recipe_path, data.get("vars") or {}, variables or {})
    values["workdir"] = str(root)
    steps = []
    for index, raw in enumerate(data.get("steps") or []):
        where = f"{recipe_path} step {index + 1}"
        if not isinstance(raw, dict) or not {"name", "run", "output"} <= set(raw):
            raise ConfigError(f"{where} needs name, run and output", "see pipelines/demo.yaml for the format")
        extra = set(raw) - {"name", "run", "output", "metric"}
        if extra:
            raise ConfigError(f"unknown key(s) {sorted(extra)} in {where}", "use name, run, output, metric")
        if not isinstance(raw["run"], list) or not raw["run"]:
            raise ConfigError(f"{where}: run must be a non-empty list of arguments", "write run: [command, arg, ...]")
        args = [_substitute(str(arg), values, where) for arg in raw["run"]]
        output = Path(_substitute(str(raw["output"]), values, where))
        steps.append(Step(str(raw["name"]), args, output, raw.get("metric")))
    if not steps:
        raise ConfigError(f"{recipe_path} has no steps", "add a steps: list")
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ConfigError(f"{recipe_path} has duplicate step names", "give every step its own name")
    return Recipe(recipe_path, root, steps)


def parse_variables(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``("clips=4", ...)`` from the command line -> ``{"clips": "4"}``."""
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--var {item!r} is not NAME=VALUE", "write e.g. --var clips=4")
        values[name.strip()] = value.strip()
    return values


def _variables(recipe_path: Path, defaults: Any, given: dict[str, str]) -> dict[str, str]:
    if not isinstance(defaults, dict):
        raise ConfigError(f"vars in {recipe_path} must be a mapping of name: value", "write vars: {clips: 12}")
    undeclared = sorted(set(given) - set(defaults))
    if undeclared:
        raise ConfigError(f"{recipe_path} has no variable {undeclared[0]!r}",
                          f"choose one of: {', '.join(sorted(defaults)) or '(none)'}")
    return {str(name): str(value) for name, value in {**defaults, **given}.items()}


def _substitute(text: str, values: dict[str, str], where: str) -> str:
    """Replace every ``{name}``; an undeclared name is an error rather than a literal brace in a path."""
    def replace(match: re.Match) -> str:
        name = match[1]
        if name not in values:
            raise ConfigError(f"{where} uses {{{name}}}, which the recipe does not declare",
                              f"add {name} under vars: or fix the spelling")
        return values[name]

    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", replace, text)


def step_key(step: Step, earlier: list[Step]) -> str:
    """Digest of the step's arguments and of every earlier output it reads (their lsync.json)."""
    upstream = {}
    for other in earlier:
        if any(str(other.output) in arg for arg in step.run) and is_complete(other.output):
            upstream[other.name] = directory_digest(other.output)
    return json_digest({"run": step.run, "upstream": upstream})


def run_recipe(recipe: Recipe, invoke) -> list[StepResult]:
    """Run the steps in order with ``invoke(args)`` (an in-process ``lsync`` call); stop at the first failure.

    A step's marker records its key when the step starts and again, marked done, when it finishes. So an
    interrupted step with the same key resumes (the stages resume on their own), while a step whose key changed
    starts over: its earlier output, which this runner made (the marker proves it), is removed first, so a stage
    never resumes stale results (e.g. clips filtered with a SyncNet that has since been retrained).
    """
    state_dir = recipe.workdir / STATE_DIR
    results: list[StepResult] = []
    for index, step in enumerate(recipe.steps):
        key = step_key(step, recipe.steps[:index])
        marker = state_dir / f"{step.name}.json"
        recorded = _read_marker(marker)
        if is_complete(step.output) and recorded == {"key": key, "done": True, "run": step.run}:
            results.append(StepResult(step.name, "skipped", 0.0, _metric(step), str(step.output)))
            continue
        if recorded is not None and recorded.get("key") != key and step.output.exists():
            log.info("step %s changed since its last run: starting it over", step.name)
            _remove_output(step.output)
        atomic_write_json(marker, {"key": key, "done": False, "run": step.run})
        started = time.perf_counter()
        log.info("step %s: lsync %s", step.name, " ".join(step.run))
        try:
            invoke(step.run)
        except LsyncError as exc:
            results.append(StepResult(step.name, "failed", time.perf_counter() - started, None, str(step.output),
                                      exc.message))
            return results
        if not is_complete(step.output):
            raise StageFailure(f"step {step.name} finished without writing {step.output / MANIFEST_NAME}",
                               "check the step's output path in the recipe")
        atomic_write_json(marker, {"key": key, "done": True, "run": step.run})
        results.append(StepResult(step.name, "done", time.perf_counter() - started, _metric(step), str(step.output)))
    return results


def _remove_output(output: Path) -> None:
    import shutil

    if output.is_dir():
        shutil.rmtree(output)
    else:
        output.unlink(missing_ok=True)


def _read_marker(marker: Path) -> dict[str, Any] | None:
    import json

    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def _metric(step: Step) -> Any:
    if not step.metric or not is_complete(step.output):
        return None
    import json

    value: Any = json.loads((step.output / MANIFEST_NAME).read_text(encoding="utf-8"))
    for part in step.metric.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def recipe_path(name: str) -> Path:
    """A recipe by path, or by name from the shipped ``pipelines/`` folder."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = Path(__file__).resolve().parent / "pipelines" / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    available = sorted(p.stem for p in shipped.parent.glob("*.yaml"))
    raise ConfigError(f"recipe {name} not found", f"pass a YAML file or one of: {', '.join(available) or '(none)'}")
