"""Recipes: steps run in order, finished steps are skipped, a changed step reruns, failures stop the run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lsync.cli import cli
from lsync.errors import ConfigError, StageFailure
from lsync.pipeline import load_recipe, parse_variables

RECIPE = """
workdir: unused
steps:
  - name: raw
    run: [synth, "{workdir}/raw", --clips, "1", --seconds, "2.4", --seed, "SEED", -q]
    output: "{workdir}/raw"
    metric: summary.num_clips
  - name: data
    run: [preprocess, "{workdir}/raw", "{workdir}/data", --min-seconds, "2", --max-seconds, "3",
          --resolution, "64", --min-face, "30", -q]
    output: "{workdir}/data"
    metric: summary.clips
"""


def write_recipe(tmp_path, seed=0):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.replace("SEED", str(seed)), encoding="utf-8")
    return path


def run(recipe, workdir):
    return CliRunner().invoke(cli, ["pipeline", "run", str(recipe), "--workdir", str(workdir)])


@pytest.mark.slow
def test_recipe_runs_then_resumes_as_a_no_op(tmp_path):
    recipe, workdir = write_recipe(tmp_path), tmp_path / "work dir"
    first = run(recipe, workdir)
    assert first.exit_code == 0, first.output
    assert "done" in first.stdout and json.loads((workdir / "data" / "lsync.json").read_text())["summary"]["clips"] == 1
    second = run(recipe, workdir)
    assert second.exit_code == 0 and second.stdout.count("skipped") == 2 and "done" not in second.stdout
    # a changed upstream step reruns, and so does every step that reads its output
    changed = run(write_recipe(tmp_path, seed=1), workdir)
    assert changed.exit_code == 0
    assert changed.stdout.count("done") == 2


def test_failing_step_stops_with_a_resume_hint(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("steps:\n  - {name: a, run: [inspect, '{workdir}/missing'], output: '{workdir}/x'}\n"
                      "  - {name: b, run: [inspect, '{workdir}'], output: '{workdir}/y'}\n")
    result = run(recipe, tmp_path)
    assert isinstance(result.exception, StageFailure)
    assert "step a failed" in str(result.exception) and "rerun" in str(result.exception)
    assert "failed" in result.stdout and " b " not in result.stdout


@pytest.mark.parametrize("text, message", [
    ("steps: []", "no steps"),
    ("steps:\n  - {name: a, run: [synth]}", "needs name, run and output"),
    ("steps:\n  - {name: a, run: [synth], output: x, colour: red}", "unknown key"),
    ("stages: []", "unknown key"),
])
def test_invalid_recipes(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(path)


def test_variables_fill_the_steps_and_unknown_ones_are_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("vars: {clips: 12}\nsteps:\n  - {name: a, run: [synth, '{workdir}/raw', --clips, '{clips}'], "
                    "output: '{workdir}/raw'}\n")
    assert load_recipe(path, tmp_path / "w").steps[0].run == ["synth", str(tmp_path / "w" / "raw"), "--clips", "12"]
    assert load_recipe(path, tmp_path, parse_variables(["clips=3"])).steps[0].run[-1] == "3"
    with pytest.raises(ConfigError, match="no variable 'clip'"):
        load_recipe(path, tmp_path, {"clip": "3"})
    with pytest.raises(ConfigError, match="not NAME=VALUE"):
        parse_variables(["clips"])
    path.write_text("steps:\n  - {name: a, run: [synth, '{workdir}/{nope}'], output: x}\n")
    with pytest.raises(ConfigError, match="uses {nope}"):
        load_recipe(path)
