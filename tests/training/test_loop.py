"""The shared Trainer on a toy regression: exact resume, Ctrl-C, accumulation, budgets, pruning, metrics, and the
end of a run that every stage shares (``lsync.json`` only once the run is complete)."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lsync.config import config_to_dict
from lsync.errors import InputError
from lsync.manifest import MANIFEST_NAME, describe_input, read_manifest, read_records
from lsync.training.checkpointing import latest_checkpoint, list_checkpoints, load_training_state
from lsync.training.loop import LoopConfig, Trainer, lr_factor
from lsync.training.run_dir import fit_and_record
from lsync.training.sampling import SampleKey
from lsync.training.seeding import sample_rng, seed_everything

TRUE_WEIGHTS = torch.tensor([1.5, -2.0, 0.5, 3.0])


class NoisyRegression(torch.utils.data.Dataset):
    """y = x . w + noise, each sample drawn from (epoch, position) like the real datasets."""

    def __init__(self, size: int = 37):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: SampleKey):
        rng = sample_rng(11, key.epoch, key.position)
        x = torch.from_numpy(rng.normal(size=4).astype("float32")) + key.index * 0.01
        return {"x": x, "y": (x @ TRUE_WEIGHTS + 0.1 * float(rng.normal())).reshape(1)}


class Toy(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.drop = nn.Dropout(dropout)  # draws from torch's global RNG: exact resume needs its state
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        return self.out(self.drop(torch.tanh(self.hidden(x))))


def step_fn(model, batch):
    prediction = model(batch["x"])
    loss = nn.functional.mse_loss(prediction, batch["y"])
    return {"loss": loss, "mae": (prediction - batch["y"]).abs().mean()}


def validate(model):
    x = torch.linspace(-1, 1, 16).reshape(4, 4).T
    return {"loss": float(nn.functional.mse_loss(model(x), (x @ TRUE_WEIGHTS).reshape(-1, 1)))}


def make_trainer(run_dir, dropout=0.2, on_step_end=None, dataset=None, **overrides) -> Trainer:
    settings = dict(batch_size=4, grad_accum=2, lr=3e-2, max_steps=6, log_every=1, val_every=3,
                    checkpoint_every=0, keep_last=0, num_workers=0, cpu=True, tensorboard=False, seed=5,
                    warmup_steps=2)
    config = LoopConfig(**{**settings, **overrides})
    seed_everything(config.seed)
    model = Toy(dropout)
    return Trainer(run_dir, model, {"kind": "toy", "dropout": dropout}, config, dataset or NoisyRegression(),
                   step_fn, validate_fn=validate, description="toy", on_step_end=on_step_end)


def weights(checkpoint) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model.safetensors")


@pytest.mark.parametrize("schedule", [{}, {"lr_schedule": "cosine", "lr_decay_steps": 4}], ids=["constant", "cosine"])
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, schedule):
    straight = make_trainer(tmp_path / "straight", **schedule).fit()
    assert straight.step == 6 and straight.stopped == "max_steps"
    assert straight.epoch == 1  # 12 micro-batches of 4 over 37 items: the run crossed an epoch

    first = make_trainer(tmp_path / "split", max_steps=3, **schedule).fit()
    assert first.step == 3
    resumed_trainer = make_trainer(tmp_path / "split", **schedule)
    resumed = resumed_trainer.fit(latest_checkpoint(tmp_path / "split"))
    assert resumed.resumed_from.name == "step-000003" and resumed.step == 6

    a, b = weights(straight.checkpoint), weights(resumed.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)
    clean = lambda records: [{k: v for k, v in r.items() if k not in ("time_s", "samples_per_s")} for r in records]
    assert clean(read_records(tmp_path / "split" / "metrics.jsonl")) == clean(
        read_records(tmp_path / "straight" / "metrics.jsonl"))
    state = load_training_state(resumed.checkpoint)
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 4)  # 4 steps of 2 micro-batches fill epoch 0


def test_lr_factor_warms_up_then_follows_the_schedule():
    constant = lr_factor(LoopConfig(warmup_steps=4))
    assert [constant(step) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]

    cosine = lr_factor(LoopConfig(warmup_steps=2, lr_schedule="cosine", lr_decay_steps=10, lr_min_ratio=0.1))
    assert [cosine(step) for step in range(3)] == [0.5, 1.0, 1.0]
    assert cosine(2 + 5) == pytest.approx(0.55)  # half-way: midway between 1 and the floor
    assert cosine(2 + 10) == pytest.approx(0.1) and cosine(500) == pytest.approx(0.1)  # then flat at the floor
    decay = [cosine(step) for step in range(2, 13)]
    assert all(a > b for a, b in zip(decay, decay[1:]))


def test_cosine_schedule_reaches_the_logged_lr(tmp_path):
    make_trainer(tmp_path, max_steps=6, lr_schedule="cosine", lr_decay_steps=4, lr_min_ratio=0.0).fit()
    lrs = [r["lr"] for r in read_records(tmp_path / "metrics.jsonl")]
    assert lrs[1] == pytest.approx(3e-2) and lrs[3] == pytest.approx(1.5e-2) and lrs[-1] == pytest.approx(0.0)


def test_metrics_have_one_line_per_logged_step_and_a_chart(tmp_path):
    result = make_trainer(tmp_path, max_steps=4, log_every=2, val_every=2).fit()
    records = read_records(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4]
    for record in records:
        assert {"train/loss", "train/mae", "lr", "grad_norm", "samples_per_s", "epoch", "val/loss"} <= set(record)
        assert record["samples_per_s"] > 0 and record["grad_norm"] > 0
    assert records[0]["lr"] == pytest.approx(3e-2)  # warm-up of 2 steps is over
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.metrics["val/loss"] == pytest.approx(records[-1]["val/loss"], rel=1e-6)  # the file keeps 7 digits


def test_ctrl_c_finishes_the_step_writes_a_checkpoint_and_stops(tmp_path):
    def press_ctrl_c(trainer, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    handler_before = signal.getsignal(signal.SIGINT)
    result = make_trainer(tmp_path, on_step_end=press_ctrl_c).fit()
    assert result.stopped == "interrupted" and result.step == 2
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2]
    assert signal.getsignal(signal.SIGINT) is handler_before
    again = make_trainer(tmp_path).fit(latest_checkpoint(tmp_path))
    assert again.step == 6 and again.stopped == "max_steps"


def test_fit_and_record_writes_lsync_json_only_when_the_run_is_complete(tmp_path):
    data = tmp_path / "toy data.txt"
    data.write_text("the inputs", encoding="utf-8")

    def press_ctrl_c(trainer, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    def inputs():
        return [describe_input(data)]

    interrupted = make_trainer(tmp_path, on_step_end=press_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        fit_and_record(interrupted, None, "toy data", "syncnet-run", interrupted.config, inputs)
    assert not (tmp_path / MANIFEST_NAME).exists()

    resumed = make_trainer(tmp_path)
    summary = fit_and_record(resumed, latest_checkpoint(tmp_path), "toy data", "syncnet-run", resumed.config, inputs,
                             finish=lambda summary: summary.update(exported="model/"))
    manifest = read_manifest(tmp_path, kind="syncnet-run")
    assert manifest["summary"] == summary and manifest["config"] == config_to_dict(resumed.config)
    assert summary["steps"] == 6 and summary["stopped"] == "max_steps" and summary["exported"] == "model/"
    assert summary["checkpoint"] == str(latest_checkpoint(tmp_path).relative_to(tmp_path))
    assert [entry["path"] for entry in manifest["inputs"]] == [str(data.resolve())]


def test_accumulation_matches_one_big_batch(tmp_path):
    big = make_trainer(tmp_path / "big", dropout=0.0, batch_size=8, grad_accum=1).fit()
    accumulated = make_trainer(tmp_path / "acc", dropout=0.0, batch_size=4, grad_accum=2).fit()
    a, b = weights(big.checkpoint), weights(accumulated.checkpoint)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_time_budget_stops_with_a_checkpoint(tmp_path):
    result = make_trainer(tmp_path, max_minutes=0.0).fit()
    assert result.stopped == "max_minutes" and result.step == 1
    assert latest_checkpoint(tmp_path).name == "step-000001"


def test_keep_last_prunes_old_checkpoints(tmp_path):
    make_trainer(tmp_path, max_steps=5, checkpoint_every=1, keep_last=2).fit()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".lsync-tmp-")]


def test_a_dataset_smaller_than_one_batch_is_refused(tmp_path):
    with pytest.raises(InputError, match="fewer than one global batch"):
        make_trainer(tmp_path, dataset=NoisyRegression(3))


def test_resume_with_another_global_batch_is_refused(tmp_path):
    from lsync.errors import CheckpointError

    make_trainer(tmp_path, max_steps=1).fit()
    with pytest.raises(CheckpointError, match="global micro-batch"):
        make_trainer(tmp_path, batch_size=2).fit(latest_checkpoint(tmp_path))
