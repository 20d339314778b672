"""Smoke tests of benchmarks/models.py (run as a user runs it) and of the timing/memory helpers it uses."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "models.py"

MODES = {"forward", "forward_backward", "forward_backward_checkpointing"}
ROW_KEYS = {"model", "config", "mode", "batch", "warmup", "repeats", "times_s", "median_s", "min_s", "samples_per_s",
            "memory_kind", "peak_memory_mib", "peak_memory_delta_mib"}


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is being made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, str, Path]:
    """One ``--quick`` run on CPU: (JSON from stdout, stderr, the --out file). A path with a space and unicode.

    One thread: on a CPU shared with other jobs, two OpenMP threads on two cores can run 10-100x slower.
    """
    out = tmp_path_factory.mktemp("bench") / "résultats quick" / "models.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--repeats", "2", "--threads", "1",
         "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr, out


def test_quick_run_prints_one_json_object_with_the_settings_and_machine(quick_run):
    result, stderr, out = quick_run
    assert result["schema"] == "lsync.benchmark.models/1"
    assert result["settings"]["quick"] is True
    assert result["settings"]["repeats"] == 2
    assert result["settings"]["precision"] == "float32"
    assert result["settings"]["threads"] == 1
    machine = result["machine"]
    assert machine["device"] == "cpu"
    assert machine["torch"] == torch.__version__
    assert machine["torch_threads"] >= 1
    assert machine["process_peak_rss_mib"] > 0
    # Progress goes to stderr, the same JSON to --out.
    assert "unet_tiny" in stderr and "median" in stderr
    assert json.loads(out.read_text(encoding="utf-8")) == result


def test_quick_run_measures_three_modes_of_each_tiny_model(quick_run):
    result, _, _ = quick_run
    cases = {(case["model"], case["config"]): case for case in result["cases"]}
    assert set(cases) == {("unet3d", "unet_tiny"), ("syncnet", "syncnet_tiny")}
    assert cases["unet3d", "unet_tiny"]["input_shapes"]["sample"] == [1, 13, 16, 8, 8]
    # The tokens the tiny U-Net's audio_feat_length cuts: 2 (left + right + 1) Whisper positions x 5 hidden states.
    from lsync.models.presets import model_config

    left, right = model_config("unet_tiny")["audio_feat_length"]
    tokens = 2 * (left + right + 1) * (model_config("whisper_tiny")["n_audio_layer"] + 1)
    assert cases["unet3d", "unet_tiny"]["input_shapes"]["encoder_hidden_states"] == [1, 16, tokens, 384]
    assert cases["syncnet", "syncnet_tiny"]["input_shapes"]["image_sequences"][1:] == [48, 32, 64]
    assert cases["syncnet", "syncnet_tiny"]["input_shapes"]["audio_sequences"][1:] == [1, 80, 52]
    assert all(case["parameters"] > 100_000 for case in cases.values())

    rows = result["results"]
    assert {(row["model"], row["config"], row["mode"]) for row in rows} == {
        (model, config, mode) for model, config in cases for mode in MODES
    }
    for row in rows:
        assert ROW_KEYS <= set(row), row
        assert 1 <= row["repeats"] == len(row["times_s"]) <= 2
        assert all(t > 0 for t in row["times_s"])
        assert row["min_s"] <= row["median_s"]
        assert row["samples_per_s"] == pytest.approx(row["batch"] / row["median_s"], rel=1e-3)
        assert row["memory_kind"] == "cpu_rss_sampled"
        assert row["peak_memory_mib"] >= row["peak_memory_delta_mib"] >= 0
    unet_forward = next(r for r in rows if r["config"] == "unet_tiny" and r["mode"] == "forward")
    assert unet_forward["frames_per_s"] == pytest.approx(16 / unet_forward["median_s"], rel=1e-3)
    assert result["skipped"] == []


def test_cuda_only_cases_are_skipped_with_a_note_on_cpu(monkeypatch, capsys):
    models = _load("bench_models", SCRIPT)
    full_plan = models.plan_cases(quick=False)
    cuda_only = [case for case in full_plan if case.needs_cuda]
    assert {case.config for case in cuda_only} >= {"unet_stage2", "syncnet_16_pixel_attn"}
    assert "unet_mid" in {case.config for case in full_plan if not case.needs_cuda}

    def build_must_not_run():
        raise AssertionError("a CUDA-only model was built on CPU")

    for case in cuda_only:
        case.build = build_must_not_run
    monkeypatch.setattr(models, "plan_cases", lambda quick: cuda_only)
    assert models.main(["--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["results"] == [] and result["cases"] == []
    assert [entry["config"] for entry in result["skipped"]] == [case.config for case in cuda_only]
    assert all("CUDA" in entry["reason"] for entry in result["skipped"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_asking_for_cuda_without_it_is_a_usage_error(capsys):
    models = _load("bench_models_cuda", SCRIPT)
    assert models.main(["--device", "cuda"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no CUDA device" in captured.err


def test_time_callable_warms_up_and_stops_at_the_row_budget():
    common = _load("bench_common", REPO_ROOT / "benchmarks" / "_common.py")
    calls = []

    def nap() -> None:
        calls.append(time.perf_counter())
        time.sleep(0.03)

    timing = common.time_callable(nap, torch.device("cpu"), repeats=50, warmup=2, budget_s=0.2)
    assert timing.warmup == 2
    assert len(calls) == 2 + len(timing.times_s)
    assert 1 <= len(timing.times_s) < 20  # stopped by the budget, not by the 50 repeats
    assert timing.min_s >= 0.025

    unbounded = common.time_callable(nap, torch.device("cpu"), repeats=3, warmup=0)
    assert len(unbounded.times_s) == 3


def test_peak_memory_sees_a_cpu_allocation_made_inside_the_block():
    common = _load("bench_common_memory", REPO_ROOT / "benchmarks" / "_common.py")
    device = torch.device("cpu")
    common.release_memory(device)
    with common.PeakMemory(device) as memory:
        block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, written so the pages are resident
        time.sleep(0.05)  # let the sampler see it
        del block
    assert memory.kind == "cpu_rss_sampled"
    assert memory.delta_mib >= 48
    assert memory.peak_mib >= memory.baseline_mib + 48


def test_gpu_benchmark_builds_the_released_geometry_and_needs_cuda(capsys):
    import torch

    from benchmarks.gpu_infer import main, released_size_bundle

    bundle = released_size_bundle("meta")  # shapes only: no memory
    assert sum(p.numel() for p in bundle.unet.parameters()) == 1_267_099_844  # the released U-Net's count
    assert list(bundle.vae.config.block_out_channels) == [128, 256, 512, 512]
    if not torch.cuda.is_available():
        assert main([]) == 2 and "needs a GPU" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- syncnet accuracy
def test_syncnet_ablation_rows_start_at_the_old_recipe_and_end_at_the_shipped_preset():
    from lsync.config import resolve_config
    from lsync.stages.train_syncnet import TrainSyncNetConfig

    bench = _load("syncnet_synthetic_accuracy", REPO_ROOT / "benchmarks" / "syncnet_synthetic_accuracy.py")
    shipped = resolve_config(TrainSyncNetConfig, "syncnet", "tiny")
    before = resolve_config(TrainSyncNetConfig, "syncnet", "tiny", overrides=bench.BEFORE)
    assert bench.CHANGES[0][1] == []  # the first row is the old recipe itself
    undone = [o for _, overrides in bench.CHANGES for o in overrides]
    assert sorted(undone) == sorted(bench.BEFORE)  # every change gets a row, and the last row is the preset
    for override in bench.BEFORE:  # each override really reverts something the preset now sets
        alone = resolve_config(TrainSyncNetConfig, "syncnet", "tiny", overrides=[override])
        assert alone != shipped, override
    assert before.loss.logit_scale is None and before.train.num_workers == 1
    assert bench.parse_marks("5,10,15", 15) == [5, 10, 15]
    assert bench.parse_marks("5,10,15", 8) == [5, 8]


# ------------------------------------------------------------------------------------ infer_settings.py
def test_infer_settings_follows_the_demo_recipe_and_refuses_an_unfinished_workdir(tmp_path):
    """The settings benchmark renders with the demo's own guidance, and names the step to run first."""
    import yaml

    module = _load("bench_infer_settings", REPO_ROOT / "benchmarks" / "infer_settings.py")
    recipe = yaml.safe_load((REPO_ROOT / "pipelines" / "demo.yaml").read_text(encoding="utf-8"))
    assert module.demo_guidance() == float(recipe["vars"]["guidance"])
    assert module.SETTINGS[0].name == module.REFERENCE  # the exact path every difference is taken against

    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "infer_settings.py"),
                           "--workdir", str(tmp_path / "no demo")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "lsync demo --workdir" in proc.stderr and "no demo" in proc.stderr
