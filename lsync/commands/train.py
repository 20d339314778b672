"""``lsync train``: the training stages, ``vae`` (the image autoencoder of the tiny models), ``syncnet`` (the sync
expert) and ``unet`` (the lip-sync U-Net)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from lsync.cli_options import CONTEXT, config_options, verbosity_options


@click.group(context_settings=CONTEXT)
def train() -> None:
    """Train the models: the SyncNet sync expert, then the lip-sync U-Net (and, for small models, their VAE)."""


def loop_options(func):
    """Flags every trainer shares; each maps to a ``train.*`` config key (``None`` = keep the preset's value)."""
    options = [
        click.option("--resume", default="auto", show_default=True, metavar="auto|never|PATH",
                     help="Continue from the run's latest checkpoint (auto), start fresh (never), or a checkpoint."),
        click.option("--max-steps", "train__max_steps", type=click.IntRange(min=1), help="Optimizer steps in all."),
        click.option("--max-minutes", "train__max_minutes", type=click.FloatRange(min=0), help="Wall-time budget."),
        click.option("--batch-size", "train__batch_size", type=click.IntRange(min=1),
                     help="Samples per process and micro-step."),
        click.option("--grad-accum", "train__grad_accum", type=click.IntRange(min=1), help="Micro-steps per step."),
        click.option("--lr", "train__lr", type=float, help="AdamW learning rate."),
        click.option("--keep-last", "train__keep_last", type=click.IntRange(min=0), help="Checkpoints kept (0: all)."),
        click.option("--val-every", "train__val_every", type=click.IntRange(min=0), help="Steps between validations."),
        click.option("--checkpoint-every", "train__checkpoint_every", type=click.IntRange(min=0),
                     help="Steps between checkpoints."),
        click.option("--workers", "train__num_workers", type=click.IntRange(min=0), help="Data-loader processes."),
        click.option("--mixed-precision", "train__mixed_precision", type=click.Choice(["auto", "no", "fp16", "bf16"]),
                     help="auto: bf16 (fp16 on older GPUs) on CUDA, float32 on CPU."),
        click.option("--cpu", "train__cpu", is_flag=True, default=None, help="Train on the CPU even with a GPU."),
        click.option("--seed", "train__seed", type=int, help="Run seed (weights, sample order, negatives)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def trainer_command(name: str, preset: str, presets: str, init: str):
    """``lsync train <name> DATA_DIR RUN_DIR``: ``--preset`` (default ``preset``; ``presets`` names the shipped
    ones) and ``--init`` (``init`` says what it fine-tunes from), then the decorators below this one."""
    arguments = [
        click.argument("data_dir", type=click.Path(path_type=Path)),
        click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path)),
        click.option("--preset", default=preset, show_default=True,
                     help=f"configs/{name}/<name>.yaml ({presets}) or a YAML path."),
        click.option("--init", "init", type=click.Path(exists=True, path_type=Path), help=init),
    ]

    def decorate(func):
        for argument in reversed(arguments):
            func = argument(func)
        return train.command(name, context_settings=CONTEXT)(func)
    return decorate


def trainer_options(func):
    """What every trainer takes after its own options: the loop flags, ``--config``/``--set`` and ``-q``/``-v``."""
    return loop_options(config_options(verbosity_options(func)))


@trainer_command("vae", "tiny", "tiny",
                 init="Fine-tune from this VAE (a diffusers folder or a finished lsync train vae run).")
@click.option("--resolution", "model__resolution", type=click.IntRange(min=8), help="Face size in pixels.")
@trainer_options
def vae(data_dir: Path, run_dir: Path, **options) -> None:
    """Train the image autoencoder of small latent-diffusion models on a data directory's faces into RUN_DIR."""
    from lsync.stages.train_vae import TrainVAEConfig, run

    _train(TrainVAEConfig, run, "vae", data_dir, run_dir, VAE_SUMMARY_KEYS, **options)


@trainer_command("syncnet", "16_pixel_attn", "16_pixel_attn, 16_pixel, tiny",
                 init="Fine-tune from these weights (stable_syncnet.pt, safetensors or a checkpoint directory).")
@click.option("--min-offset", "data__min_offset", type=click.IntRange(min=1),
              help="Frames between a same-clip negative's audio and its video.")
@trainer_options
def syncnet(data_dir: Path, run_dir: Path, **options) -> None:
    """Train the audio-visual sync expert on a data directory (lsync preprocess) into RUN_DIR."""
    from lsync.stages.train_syncnet import TrainSyncNetConfig, run

    _train(TrainSyncNetConfig, run, "syncnet", data_dir, run_dir, SYNCNET_SUMMARY_KEYS, **options)


@trainer_command("unet", "stage2", "stage1, stage2, stage2_efficient, their _512 variants, tiny",
                 init="Start from these U-Net weights (latentsync_unet.pt, safetensors, a run or checkpoint "
                      "directory).")
@click.option("--syncnet", "syncnet", type=click.Path(exists=True, path_type=Path),
              help="Frozen SyncNet of the sync loss: an lsync train syncnet run, a checkpoint, or stable_syncnet.pt.")
@click.option("--allow-partial", "allow_partial", is_flag=True, default=None,
              help="Let --init fill only part of the U-Net; what it leaves at its initial value is printed.")
@click.option("--vae", "model__vae", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Your own VAE instead of the preset's: an lsync train vae run or a diffusers folder.")
@click.option("--weights-dir", "model__weights_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where released files (VAE, Whisper, SyncNet, TREPA) are looked for first.")
@click.option("--recon-weight", "loss__recon_weight", type=click.FloatRange(min=0), help="Noise MSE weight.")
@click.option("--sync-weight", "loss__sync_weight", type=click.FloatRange(min=0),
              help="SyncNet loss weight (0: the SyncNet never runs).")
@click.option("--lpips-weight", "loss__lpips_weight", type=click.FloatRange(min=0), help="LPIPS (lower half) weight.")
@click.option("--trepa-weight", "loss__trepa_weight", type=click.FloatRange(min=0), help="TREPA weight.")
@click.option("--uncond-prob", "loss__uncond_prob", type=click.FloatRange(0, 1),
              help="Train with zero audio this often (the guidance branch of inference).")
@click.option("--mixed-noise-alpha", "loss__mixed_noise_alpha", type=click.FloatRange(min=0),
              help="Share of noise common to all frames (1 = LatentSync, 0 = independent).")
@click.option("--ema/--no-ema", "train__ema", default=None, help="Keep an EMA of the trainable weights.")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", "train__gradient_checkpointing", default=None,
              help="Recompute U-Net activations in backward (less memory, more time).")
@trainer_options
def unet(data_dir: Path, run_dir: Path, **options) -> None:
    """Train the lip-sync U-Net on a data directory (lsync preprocess) into RUN_DIR."""
    from lsync.stages.train_unet import TrainUNetConfig, run

    _train(TrainUNetConfig, run, "unet", data_dir, run_dir, UNET_SUMMARY_KEYS, **options)


#: Columns of the table printed at the end of `lsync train unet`.
UNET_SUMMARY_KEYS = ("steps", "train/loss", "train/recon", "train/sync", "train/lpips", "train/trepa",
                     "val/sync_cosine", "stopped", "checkpoint")
VAE_SUMMARY_KEYS = ("steps", "train/loss", "train/l1", "train/mouth_l1", "train/kl", "val/psnr", "val/mouth_psnr",
                    "scaling_factor", "stopped", "checkpoint")
SYNCNET_SUMMARY_KEYS = ("steps", "epoch", "train/loss", "train/accuracy", "val/loss", "val/accuracy", "stopped",
                        "checkpoint")


def _train(config_class: type, run: Callable[..., dict | None], stage: str, data_dir: Path, run_dir: Path,
           columns: tuple[str, ...], preset: str, resume: str, config_file: Path | None, overrides: tuple[str, ...],
           **flags) -> None:
    """Resolve a trainer's config (defaults < preset of ``configs/<stage>/`` or --config < flags < --set), train,
    and print the final metrics in ``columns``.

    ``flags`` are the options named after config keys (``train__lr``, ``init``). Only the main process of a
    distributed run gets a summary back, so only it prints one.
    """
    from lsync.config import resolve_config

    config = resolve_config(config_class, stage, preset, config_file, dotted(flags), overrides)
    summary = run(data_dir, run_dir, config, resume=resume)
    if summary is not None:
        _print_summary(run_dir, summary, columns)


def dotted(flags: dict, **extra) -> dict:
    """Click names ``train__max_steps`` -> config keys ``train.max_steps``; paths become strings."""
    out = {key.replace("__", "."): value for key, value in {**flags, **extra}.items()}
    return {key: str(value) if isinstance(value, Path) else value for key, value in out.items()}


def _print_summary(run_dir: Path, summary: dict, columns: tuple[str, ...]) -> None:
    from rich.table import Table

    from lsync.console import result_console

    table = Table(title=str(run_dir), title_justify="left")
    keys = [k for k in columns if k in summary]
    for key in keys:
        table.add_column(key)
    table.add_row(*[f"{summary[k]:.4f}" if isinstance(summary[k], float) else str(summary[k]) for k in keys])
    result_console.print(table)


if __name__ == "__main__":  # torchrun --nproc_per_node N -m lsync.commands.train syncnet ... (no lsync on PATH)
    from lsync.console import configure

    configure()
    train(prog_name="lsync train")
