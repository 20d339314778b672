"""Recipes: steps run in order, finished steps are skipped, a changed step reruns, failures stop the run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


@pytest.mark.parametrize("name", ["demo", "latentsync-256", "latentsync-512"])
def test_shipped_recipes_name_real_commands_and_flags(name, tmp_path):
    """Every step of a shipped recipe names an lsync command and only flags that command has."""
    import click

    from lsync.pipeline import recipe_path

    recipe = load_recipe(recipe_path(name), tmp_path)
    for step in recipe.steps:
        command, args = cli, list(step.run)
        while isinstance(command, click.Group):
            assert args and args[0] in command.commands, f"{name}/{step.name}: no command {args[:1]}"
            command, args = command.commands[args[0]], args[1:]
        flags = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        used = {arg for arg in args if arg.startswith("--")}
        assert used <= flags, f"{name}/{step.name}: unknown {sorted(used - flags)}"


def test_a_changed_step_starts_over_and_an_interrupted_one_resumes(tmp_path):
    """The runner removes a step's own earlier output when the step changed, never when it was only cut short."""
    from lsync.manifest import write_manifest
    from lsync.pipeline import run_recipe

    def recipe(clips):
        path = tmp_path / "r.yaml"
        path.write_text(f"steps:\n  - {{name: a, run: [make, '{{workdir}}/out', '{clips}'], output: '{{workdir}}/out'}}\n")
        return load_recipe(path, tmp_path / "work")

    seen = []

    def invoke(args, fail=False):
        out = Path(args[1])
        seen.append(sorted(p.name for p in out.iterdir()) if out.exists() else None)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"part-{args[2]}").write_text("x")
        if fail:
            raise StageFailure("killed", "rerun")
        write_manifest(out, "raw", {"clips": args[2]})

    assert run_recipe(recipe(1), lambda a: invoke(a, fail=True))[0].status == "failed"
    run_recipe(recipe(1), invoke)  # same key: the partial output is resumed, not removed
    assert seen[-1] == ["part-1"]
    assert run_recipe(recipe(1), invoke)[0].status == "skipped"
    run_recipe(recipe(2), invoke)  # changed: the old output is removed before the step runs again
    assert seen[-1] is None
    assert sorted(p.name for p in (tmp_path / "work" / "out").iterdir()) == ["lsync.json", "part-2"]


def one_step_recipe(tmp_path, output: str, value: str):
    from lsync.pipeline import load_recipe

    path = tmp_path / "one.yaml"
    path.write_text(f"steps:\n  - {{name: a, run: [make, '{output}', '{value}'], output: '{output}'}}\n")
    return load_recipe(path, tmp_path / "work")


def make_output(args):
    """A stand-in stage: writes part-<value> and a manifest into its output folder."""
    from lsync.manifest import write_manifest

    out = Path(args[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"part-{args[2]}").write_text("x")
    write_manifest(out, "raw", {"value": args[2]})


def test_a_folder_the_runner_did_not_create_is_never_deleted(tmp_path):
    from lsync.pipeline import run_recipe

    mine = tmp_path / "my results"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    # the recipe is edited to point a step that already ran elsewhere at an existing folder of the user's
    assert run_recipe(one_step_recipe(tmp_path, "{workdir}/out", "1"), make_output)[0].status == "done"
    assert run_recipe(one_step_recipe(tmp_path, str(mine), "2"), make_output)[0].status == "done"
    assert (mine / "thesis.txt").read_text() == "years of work"
    # and changed again: the runner did not create that folder, so it refuses rather than deleting it
    with pytest.raises(StageFailure, match="existed before this recipe first ran it.*remove it yourself"):
        run_recipe(one_step_recipe(tmp_path, str(mine), "3"), make_output)
    assert sorted(p.name for p in mine.iterdir()) == ["lsync.json", "part-2", "thesis.txt"]
    # the folder the runner did create is still removed when its step changes
    run_recipe(one_step_recipe(tmp_path, "{workdir}/out", "4"), make_output)
    assert sorted(p.name for p in (tmp_path / "work" / "out").iterdir()) == ["lsync.json", "part-4"]


def test_a_corrupt_marker_is_changed_not_never_ran(tmp_path):
    from lsync.pipeline import STATE_DIR, run_recipe

    recipe = one_step_recipe(tmp_path, "{workdir}/out", "1")
    run_recipe(recipe, make_output)
    marker = tmp_path / "work" / STATE_DIR / "a.json"
    for broken in ('{"key": "sha256:12', "[]", '{"done": true}'):
        marker.write_text(broken)
        calls = []
        with pytest.raises(StageFailure, match="a.json of step a is unreadable"):
            run_recipe(recipe, calls.append)
        assert not calls  # the stage did not resume over an output nothing vouches for
        assert sorted(p.name for p in (tmp_path / "work" / "out").iterdir()) == ["lsync.json", "part-1"]
    shutil.rmtree(tmp_path / "work" / "out")  # what the error asks for
    assert run_recipe(recipe, make_output)[0].status == "done"


def test_upstream_steps_are_matched_by_whole_path_components(tmp_path):
    from lsync.manifest import write_manifest
    from lsync.pipeline import Step, reads_path, step_key

    work = tmp_path / "work"
    data, synced = Step("data", ["x"], work / "data"), Step("synced", ["x"], work / "data_synced")
    train = Step("train", ["train", str(work / "data_synced"), "--out", str(work / "run")], work / "run")
    for step in (data, synced):
        write_manifest(step.output, "data", {"name": step.name})
    key = step_key(train, [data, synced])
    write_manifest(data.output, "data", {"name": "data", "regenerated": True})
    assert step_key(train, [data, synced]) == key  # train does not read work/data
    write_manifest(synced.output, "data", {"name": "synced", "regenerated": True})
    assert step_key(train, [data, synced]) != key
    assert reads_path([f"--data={work / 'data'}/clips.jsonl"], work / "data")
    assert reads_path(["--set", f"syncnet={work / 'data'}"], work / "data")
    assert not reads_path([str(work / "data_synced"), str(work / "dat"), str(work)], work / "data")
