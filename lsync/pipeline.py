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
names (an argument names an output when its path components start with the output's: ``{workdir}/data_synced``
does not name ``{workdir}/data``). A step whose output is complete (``lsync.json`` present) and whose key equals
the one recorded when it last finished is skipped, so rerunning a recipe resumes it and a finished recipe is a
no-op. Keys are kept in ``<workdir>/.lsync-pipeline/<step>.json`` with the output paths the runner created: only
those are ever removed (see :func:`run_recipe`). Variables are substituted before keys are computed, so a
changed ``--var`` reruns exactly the steps that use it (and those downstream of them).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsync.console import get_logger
from lsync.errors import ConfigError, LsyncError, StageFailure
from lsync.manifest import MANIFEST_NAME, atomic_write_json, directory_digest, is_complete, json_digest
from lsync.package_data import shipped_dir

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
    """The recipe's ``vars:`` with the command line's ``--var`` values over them; a ``--var`` the recipe does not
    declare is refused (a typo would otherwise leave the default in place without a word)."""
    if not isinstance(defaults, dict):
        raise ConfigError(f"vars in {recipe_path} must be a mapping of name: value", "write vars: {clips: 12}")
    for name in sorted(given):
        if name not in defaults:
            raise ConfigError(f"{recipe_path} has no variable {name!r}",
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
        if reads_path(step.run, other.output) and is_complete(other.output):
            upstream[other.name] = directory_digest(other.output)
    return json_digest({"run": step.run, "upstream": upstream})


def reads_path(args: list[str], path: Path) -> bool:
    """Whether an argument names ``path`` or something inside it, compared by whole path components (so
    ``work/data`` is not read by an argument ``work/data_synced``). ``--flag=PATH`` and ``key=PATH`` count too."""
    wanted = _components(str(path))
    for arg in args:
        candidates = [arg] + ([arg.split("=", 1)[1]] if "=" in arg else [])
        if any(_components(c)[: len(wanted)] == wanted for c in candidates if c):
            return True
    return False


def _components(text: str) -> tuple[str, ...]:
    return Path(os.path.abspath(os.path.expanduser(text))).parts


def run_recipe(recipe: Recipe, invoke) -> list[StepResult]:
    """Run the steps in order with ``invoke(args)`` (an in-process ``lsync`` call); stop at the first failure.

    A step's marker records its key when the step starts and again, marked done, when it finishes, together with
    its output path (resolved) and every output path this runner created for the step (paths that did not exist
    before the step first ran there). So an interrupted step with the same key resumes (the stages resume on their
    own), while a step whose key changed starts over: its earlier output is removed first - only when the marker
    proves this runner created that very path - so a stage never resumes stale results (e.g. clips filtered with a
    SyncNet that has since been retrained). A path the runner did not create is never deleted: a changed step over
    such a path, or over a path whose marker cannot be read, stops with an error that says what to do.
    """
    state_dir = recipe.workdir / STATE_DIR
    results: list[StepResult] = []
    for index, step in enumerate(recipe.steps):
        key = step_key(step, recipe.steps[:index])
        marker = state_dir / f"{step.name}.json"
        here = str(step.output.resolve())
        recorded = _read_marker(marker, step)
        ours = set(recorded.get("created_paths", [])) if recorded else set()
        current = recorded if recorded and recorded.get("output", here) == here else None  # about this path
        if is_complete(step.output) and current is not None and current.get("key") == key \
                and current.get("done") is True and current.get("run") == step.run:
            results.append(StepResult(step.name, "skipped", 0.0, _metric(step), str(step.output)))
            continue
        if _prepare_output(step, current, key, here in ours, marker):
            ours.add(here)
        entry = {"key": key, "run": step.run, "output": here, "created_paths": sorted(ours)}
        atomic_write_json(marker, {**entry, "done": False})
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
        atomic_write_json(marker, {**entry, "done": True})
        results.append(StepResult(step.name, "done", time.perf_counter() - started, _metric(step), str(step.output)))
    return results


def _prepare_output(step: Step, current: dict[str, Any] | None, key: str, ours: bool, marker: Path) -> bool:
    """Make way for the step's run; returns whether its output path is (now) one this runner created.

    ``current`` is the marker when it describes this output path; ``ours`` whether the runner created the path.
    """
    if not step.output.exists():
        return True
    if current is not None and current.get("key") == key:
        return ours  # the same step, cut short: the stage resumes it
    if ours:
        log.info("step %s changed since its last run: starting it over", step.name)
        _remove_output(step.output)
        return True
    if current is None:
        return False  # the step never ran here: a folder of the user's, left to the stage (never removed)
    raise StageFailure(f"step {step.name} changed since its last run, but {step.output} existed before this "
                       "recipe first ran it, so lsync will not delete it",
                       f"remove it yourself, or point the step's output at a new folder (marker: {marker})")


def _remove_output(output: Path) -> None:
    import shutil

    if output.is_dir() and not output.is_symlink():
        shutil.rmtree(output)
    else:
        output.unlink(missing_ok=True)


def _read_marker(marker: Path, step: Step) -> dict[str, Any] | None:
    """The step's marker, or None when there is none. A marker that cannot be read is not "never ran": with the
    output present nothing tells whether it is current or who made it, which stops the run."""
    import json

    if not marker.exists():
        return None
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict) and isinstance(recorded.get("key"), str) and \
            isinstance(recorded.get("created_paths", []), list):
        return recorded
    if step.output.exists():
        raise StageFailure(f"the marker {marker} of step {step.name} is unreadable, so nothing tells whether "
                           f"{step.output} is current or who made it",
                           f"remove {step.output} (if nothing in it is yours), then run the recipe again")
    return None


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
    shipped = shipped_dir("pipelines") / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    available = sorted(p.stem for p in shipped.parent.glob("*.yaml"))
    raise ConfigError(f"recipe {name} not found", f"pass a YAML file or one of: {', '.join(available) or '(none)'}")
