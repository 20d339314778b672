"""``lsync train unet data/ runs/unet``: train (or fine-tune) the lip-sync U-Net with LatentSync's four losses.

The run directory is a manifest directory of kind ``unet-run``::

    config.yaml                 the resolved config, written at the start (a resume must match it)
    metrics.jsonl, metrics.png  every raw and weighted loss term, grad norm, lr, samples/s, validation scores
    base.safetensors            the frozen weights, once (when trainable-only checkpoints need them and no init
                                file provides them all)
    checkpoints/step-000500/    model.safetensors (trainable weights, or all) + config.json + ema.safetensors +
                                everything needed to resume exactly
    val/step-000500.mp4         a val clip's faces lip-synced to another clip's audio, scored by the SyncNet
    lsync.json                  written when the run finishes (inputs with digests; summary: final losses)

``lsync infer --unet RUN`` loads the newest checkpoint (base + trained weights, EMA when present). The U-Net is
the only model the shared :class:`lsync.training.loop.Trainer` optimises; VAE, Whisper, SyncNet, LPIPS and TREPA
are frozen helpers on the same device (:mod:`lsync.stages.train_unet_step`). Presets live in ``configs/unet/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from lsync.config import load_model_config, section
from lsync.console import get_logger, say
from lsync.errors import CheckpointError, ConfigError, InputError
from lsync.stages.train_unet_val import SyncScorer, ValidationSection
from lsync.training.loop import LoopConfig

log = get_logger(__name__)

RUN_KIND = "unet-run"
NUM_FRAMES = 16
#: Config keys that may change when a run is resumed (they do not change what is learned).
RESUME_MAY_CHANGE = ("init", "allow_partial", "data.cache_dir", "model.weights_dir", "data.latent_memo_frames")
#: Where a run keeps the copy of the VAE it trains with (``model.vae``).
RUN_VAE_DIR = "vae"


@dataclass
class UNetModelSection:
    """Which models the run uses and which U-Net parameters train."""

    weights: str = "latentsync-1.5"  # weights preset of the frozen VAE and Whisper (and SyncNet/TREPA files); tiny = random
    weights_dir: str | None = None  # searched first for released files
    vae: str | None = None  # a VAE of your own instead of the preset's: an lsync train vae run or a diffusers folder
    unet: str = "unet_stage2"  # configs/models/<name>.yaml or a YAML path: the U-Net architecture
    unet_overrides: dict = field(default_factory=dict)  # constructor keys changed from that file
    resolution: int = 256  # face size (the data is resized to it)
    trainable: list[str] = field(default_factory=lambda: ["*"])  # name patterns (substring, or glob with * ? [)
    vae_gradient_checkpointing: bool = True  # recompute the VAE decoder in backward (pixel losses)


@dataclass
class LossSection:
    """The four loss weights (0 switches a loss off, its model is then never built nor run) and the noise."""

    recon_weight: float = 1.0
    sync_weight: float = 0.05
    lpips_weight: float = 0.1
    trepa_weight: float = 10.0
    lpips_net: Literal["vgg", "alex", "squeeze"] = "vgg"
    trepa_model: str = "trepa_vit_g"  # configs/models/<name>.yaml (VideoMAE-v2 geometry)
    trepa_image_size: int | None = None  # frame size the TREPA net sees (default: the geometry's, 224)
    mixed_noise_alpha: float = 1.0  # shared-to-independent noise ratio; 0 = independent noise per frame
    uncond_prob: float = 0.0  # train with zero audio this often (the guidance branch of inference)
    # Run the pixel losses (sync, LPIPS, TREPA: the x0 decode and three loss nets) on every k-th optimizer step
    # only, recon on every step. 1 = every step, as LatentSync. Where the decode dominates a step (tiny models on a
    # CPU) a larger k buys more steps in the same time.
    pixel_loss_every: int = 1


@dataclass
class UNetDataSection:
    cache_dir: str | None = None  # derived-data cache (default: <data>/cache)
    samples_per_clip: int = 1  # windows per clip and epoch
    allow_overlap: bool = False  # let the reference window overlap the ground truth (keeps short clips)
    frame_cache: Literal["disk", "memory", "none"] = "disk"
    # Frames whose VAE latents are kept in memory and reused (the frozen VAE encodes the posterior mean, so this
    # is exact); 0 = encode every window at every step. Worth it when the data set is small.
    latent_memo_frames: int = 0


@dataclass
class TrainUNetConfig:
    """A U-Net run's ``config.yaml``: presets (``configs/unet/``), ``--config`` files and ``--set`` fill it.

    ``loss`` holds the four weights (a weight of 0 skips that term's computation); ``syncnet`` is the frozen
    expert behind the sync loss, ``init`` the U-Net weights a run starts from (``latentsync_unet.pt`` to fine-tune the release).
    """

    model: UNetModelSection = section(UNetModelSection)
    loss: LossSection = section(LossSection)
    data: UNetDataSection = section(UNetDataSection)
    validation: ValidationSection = section(ValidationSection)
    train: LoopConfig = section(LoopConfig, lr=1e-5, batch_size=1, checkpoint_weights="trainable")
    init: str | None = None  # U-Net weights to start from (latentsync_unet.pt, safetensors, checkpoint dir)
    allow_partial: bool = False  # let --init match only part of the U-Net (the rest keeps its initial value)
    syncnet: str | None = None  # SyncNet run dir, checkpoint dir or stable_syncnet.pt (default: the preset's file)

    def loss_weights(self):
        from lsync.losses import LossWeights

        loss = self.loss
        return LossWeights(recon=loss.recon_weight, sync=loss.sync_weight, lpips=loss.lpips_weight,
                           trepa=loss.trepa_weight)


# ----------------------------------------------------------------------------------------------- models
def unet_config(section: UNetModelSection) -> dict[str, Any]:
    """The U-Net constructor config: the named file with ``unet_overrides`` applied."""
    return {**load_model_config(section.unet, "model.unet", "unet"), **section.unet_overrides}


def check_resolution(resolution: int, config: dict[str, Any]) -> None:
    """The latent grid (resolution / 8) must survive the U-Net's downsamplers."""
    factor = 8 * 2 ** (len(config["block_out_channels"]) - 1)
    if resolution < factor or resolution % factor:
        raise ConfigError(f"model.resolution={resolution} is not a multiple of {factor} (VAE x U-Net downsampling)",
                          f"use e.g. {max(factor, 64)} or 256")


def preset_file(section: UNetModelSection, role: str) -> Path | None:
    """A released file of the weights preset (``vae/config.json``, ``whisper``, ``syncnet``, ``trepa``), or None."""
    from lsync.weights import find_file, preset_files

    for file in preset_files(section.weights):
        if file.role == role:
            return find_file(file, section.weights, section.weights_dir)
    return None


def load_frozen_models(section: UNetModelSection):
    """(vae, whisper feature extractor) of the weights preset - for ``tiny`` the models ``lsync infer --preset
    tiny`` builds (seeded random Whisper), so a tiny run's U-Net works there. ``model.vae`` replaces the preset's
    VAE; the tiny preset without one has a random VAE, which no U-Net can learn faces through (a warning says so)."""
    from lsync.audio.whisper import WhisperFeatureExtractor, load_whisper_encoder
    from lsync.models.presets import load_models
    from lsync.models.vae import load_vae

    own_vae = load_vae(section.vae) if section.vae else None
    if section.weights == "tiny":
        bundle = load_models("tiny")
        if own_vae is None:
            log.warning("the tiny preset's VAE is random: its latents cannot be decoded into faces, so the U-Net "
                        "cannot learn to draw a mouth; train one with `lsync train vae DATA RUN` and pass --vae RUN")
        return own_vae or bundle.vae, bundle.audio
    found = {role: preset_file(section, role) for role in ("whisper",) + (() if own_vae else ("vae/config.json",))}
    missing = [role for role, path in found.items() if path is None]
    if missing:
        raise InputError(f"weights preset '{section.weights}' lacks {', '.join(missing)}",
                         f"run `lsync weights fetch --preset {section.weights} --for training`")
    vae = own_vae or load_vae(found["vae/config.json"].parent)
    return vae, WhisperFeatureExtractor(load_whisper_encoder(found["whisper"]))


def load_init(unet: torch.nn.Module, path: str | Path, allow_partial: bool) -> set[str]:
    """Load ``--init`` weights into ``unet``; returns the state-dict names that came from the file.

    Strict unless ``allow_partial``: then every tensor whose name and shape fit is loaded, and what was left at
    its initial value (and what the file had that the U-Net does not) is printed.
    """
    from lsync.checkpoints import WEIGHTS_NAME, load_state_dict_strict, read_state_dict

    p = Path(path)
    if p.is_dir():
        from lsync.training.trainable import compose_state_dict

        if not (p / WEIGHTS_NAME).is_file():
            from lsync.sampling import resolve_unet_source

            p = resolve_unet_source(p)
        state = compose_state_dict(p, use_ema=True)
    else:
        state = read_state_dict(p, mmap=p.suffix != ".safetensors").state_dict
    if not allow_partial:
        load_state_dict_strict(unet, state, source=str(p))
        return set(state)
    expected = unet.state_dict()
    usable = {k: v for k, v in state.items() if k in expected and tuple(v.shape) == tuple(expected[k].shape)}
    if not usable:
        raise CheckpointError(f"no tensor of {p} fits this U-Net", "check --init and model.unet")
    unet.load_state_dict(usable, strict=False)
    left = [k for k in expected if k not in usable]
    unused = [k for k in state if k not in usable]
    say(f"--init {p}: loaded {len(usable)} of {len(expected)} tensors"
        + (f"; left at their initial value: {_grouped(left)}" if left else "")
        + (f"; not used from the file: {_grouped(unused)}" if unused else ""))
    return set(usable)


def _grouped(names: list[str], depth: int = 3) -> str:
    """Names summarised by their first ``depth`` components with counts (``down_blocks.0.motion_modules (12)``)."""
    counts: dict[str, int] = {}
    for name in names:
        prefix = ".".join(name.split(".")[:depth])
        counts[prefix] = counts.get(prefix, 0) + 1
    return ", ".join(f"{prefix} ({n})" for prefix, n in counts.items())


def build_unet(config: TrainUNetConfig, resume_from: Path | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The U-Net with its trainable parameters selected and its checkpoint config (``_base`` when the init file
    holds every frozen weight). On resume the weights come from the checkpoint, so ``--init`` is not read."""
    from lsync.checkpoints import load_model_config
    from lsync.models.presets import build_unet as build
    from lsync.training.trainable import BASE_KEY, count_parameters, frozen_state_dict, select_trainable

    architecture = unet_config(config.model)
    check_resolution(config.model.resolution, architecture)
    try:
        unet = build(architecture)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.unet is not a valid U-Net config ({exc})", "check model.unet_overrides") from exc
    select_trainable(unet, config.model.trainable)
    # Always recorded (also where the yaml leaves it at the default): inference cuts the audio tokens with it.
    checkpoint_config = {**architecture, "audio_feat_length": list(unet.config.audio_feat_length)}
    if resume_from is not None:
        saved = load_model_config(resume_from)
        checkpoint_config[BASE_KEY] = saved.get(BASE_KEY)
        _check_resumed_audio_context(resume_from, saved, checkpoint_config["audio_feat_length"])
    elif config.init is not None:
        loaded = load_init(unet, config.init, config.allow_partial)
        init_file = Path(config.init)
        if init_file.is_file() and set(frozen_state_dict(unet)) <= loaded:
            checkpoint_config[BASE_KEY] = [str(init_file.resolve())]  # no copy of the frozen weights needed
    trainable, total = count_parameters(unet)
    log.info("U-Net: %d of %d parameters train (%s)", trainable, total, ", ".join(config.model.trainable))
    return unet, {k: v for k, v in checkpoint_config.items() if v is not None}


def record_audio_encoder(checkpoint_config: dict[str, Any], extractor, resume_from: Path | None) -> None:
    """Name the Whisper encoder this run trains on (its digest) in every checkpoint's config: inference refuses a
    U-Net fed another encoder's tokens. A resumed run must keep the encoder its checkpoint recorded."""
    from lsync.audio.whisper import AUDIO_ENCODER_KEY, encoder_digest
    from lsync.checkpoints import load_model_config as load_checkpoint_config

    digest = encoder_digest(extractor.encoder)
    before = load_checkpoint_config(resume_from).get(AUDIO_ENCODER_KEY) if resume_from is not None else None
    if before is not None and before != digest:
        raise ConfigError(f"{resume_from} was trained with another Whisper encoder ({before[:19]}..., now "
                          f"{digest[:19]}...; e.g. the tiny preset's random one of another lsync version)",
                          "train into a new run directory, or resume with the Whisper weights it was trained with")
    checkpoint_config[AUDIO_ENCODER_KEY] = digest


def _check_resumed_audio_context(checkpoint: Path, saved: dict[str, Any], now: list[int]) -> None:
    """A resumed U-Net keeps the audio context it was trained with (a checkpoint without the key predates it and
    was trained with the reference's (2, 2)); the weights would load either way, the data would not match."""
    from lsync.audio.timing import DEFAULT_AUDIO_FEAT_LENGTH

    before = list(saved.get("audio_feat_length", DEFAULT_AUDIO_FEAT_LENGTH))
    if before != now:
        raise ConfigError(f"{checkpoint} was trained with audio_feat_length {before}, the U-Net config now gives "
                          f"{now}", f"resume with --set 'model.unet_overrides={{audio_feat_length: {before}}}', "
                          "or train into a new run directory")


def build_loss_models(config: TrainUNetConfig, device: torch.device):
    """The frozen loss networks of the losses with a non-zero weight (others stay None)."""
    from lsync.losses import LossModels, make_lpips

    loss, tiny = config.loss, config.model.weights == "tiny"
    models = LossModels()
    if loss.lpips_weight > 0:
        # A random backbone is only acceptable for the tiny test preset.
        models.lpips = make_lpips(loss.lpips_net, config.model.weights_dir, require_pretrained=not tiny,
                                  device=device)
    if loss.trepa_weight > 0:
        models.trepa = build_trepa(config, device)
    if loss.sync_weight > 0:
        scorer = load_syncnet(config, device)
        if scorer is None:
            raise _no_syncnet(loss.sync_weight)
        models.syncnet, models.syncnet_resolution = scorer.model, scorer.image_size
    return models


def _no_syncnet(weight: float) -> ConfigError:
    return ConfigError(f"the sync loss has weight {weight} but no SyncNet was given",
                       "pass --syncnet RUN_OR_CKPT (an lsync train syncnet run or stable_syncnet.pt), or --sync-weight 0")


def build_trepa(config: TrainUNetConfig, device: torch.device):
    from lsync.models.presets import model_config
    from lsync.models.trepa import TrepaLoss, VideoMAEv2Encoder, load_videomae

    geometry = model_config(config.loss.trepa_model)
    if config.loss.trepa_image_size is not None:
        geometry["img_size"] = config.loss.trepa_image_size
    if config.model.weights == "tiny":
        return TrepaLoss(VideoMAEv2Encoder(geometry)).to(device)  # random, seeded by the run seed
    path = preset_file(config.model, "trepa")
    if path is None:
        raise InputError(f"the TREPA network of preset '{config.model.weights}' was not found",
                         f"run `lsync weights fetch --preset {config.model.weights} --for training`, or "
                         "--trepa-weight 0")
    return TrepaLoss(load_videomae(path, geometry, device=device))


def load_syncnet(config: TrainUNetConfig, device: torch.device) -> SyncScorer | None:
    """The frozen SyncNet of ``--syncnet`` (run, checkpoint or weights file), else the preset's file, else None."""
    from lsync.training.syncnet_recipe import load_syncnet

    source = Path(config.syncnet) if config.syncnet else None
    if source is None and config.model.weights != "tiny":
        source = preset_file(config.model, "syncnet")
    if source is None:
        return None
    loaded = load_syncnet(source, device)
    return SyncScorer(loaded.model.requires_grad_(False).eval(), loaded.image_size)


# ----------------------------------------------------------------------------------------------- the stage
def run(data_dir: str | Path, run_dir: str | Path, config: TrainUNetConfig, resume: str | None = "auto",
        on_step_end=None, step_hook=None) -> dict[str, Any] | None:
    """Train the U-Net on ``data_dir`` into ``run_dir``; returns the summary written to ``lsync.json`` (``None``
    on the other processes of a distributed run).

    ``resume``: ``"auto"`` continues from the latest checkpoint if there is one, ``None``/``"never"`` starts
    fresh (refused if the run has checkpoints), else a checkpoint directory. Ctrl-C stops after the current
    step with a checkpoint and raises ``KeyboardInterrupt``. ``step_hook(step_fn) -> step_fn`` lets tests wrap
    the training step.
    """
    from lsync.data.unet_dataset import UNetDataset, collate_unet_batch, load_clips
    from lsync.diffusion import make_scheduler
    from lsync.stages.train_unet_step import UNetTrainingStep
    from lsync.training.accelerate_setup import make_accelerator
    from lsync.training.loop import Trainer
    from lsync.training.run_dir import fit_and_record, prepare_run_dir
    from lsync.training.seeding import seed_everything
    from lsync.training.trainable import set_gradient_checkpointing

    data_dir, run_dir = Path(data_dir), Path(run_dir)
    weights = config.loss_weights()  # bad settings: one-line errors before anything is built
    _check_loss_settings(config.loss)
    records = load_clips(data_dir, None)  # wrong kind / missing directory: one-line errors
    if not any(r.get("split") == "train" for r in records):
        raise InputError(f"{data_dir} has no clips in split 'train'", "preprocess more videos into it")
    if weights.sync > 0 and config.syncnet is None and (config.model.weights == "tiny"
                                                         or preset_file(config.model, "syncnet") is None):
        raise _no_syncnet(weights.sync)
    accelerator = make_accelerator(config.train.mixed_precision, cpu=config.train.cpu)
    device = accelerator.device
    resume_from = prepare_run_dir(run_dir, config, resume, accelerator.is_main_process, RESUME_MAY_CHANGE)

    vae, extractor = load_frozen_models(config.model)
    seed_everything(config.train.seed)
    unet, checkpoint_config = build_unet(config, resume_from)
    record_audio_encoder(checkpoint_config, extractor, resume_from)
    if config.model.vae:
        from lsync.models.vae import VAE_KEY

        # The U-Net's latents belong to this VAE: the run keeps a copy, which every checkpoint names.
        if accelerator.is_main_process:
            keep_vae_copy(config.model.vae, run_dir, resumed=resume_from is not None)
        checkpoint_config[VAE_KEY] = f"../../{RUN_VAE_DIR}"  # relative to checkpoints/step-N/
    vae.to(device)
    set_gradient_checkpointing(vae, config.model.vae_gradient_checkpointing and weights.needs_pixels)
    loss_models = build_loss_models(config, device)
    if device.type == "cuda":
        extractor.encoder.to(device)  # caching Whisper features is far faster on the GPU

    d = config.data
    dataset_args = dict(cache_dir=d.cache_dir, resolution=config.model.resolution, num_frames=NUM_FRAMES,
                        allow_overlap=d.allow_overlap, frame_cache=d.frame_cache,
                        audio_feat_length=unet.config.audio_feat_length)  # the tokens this U-Net reads
    with accelerator.main_process_first():  # the main process fills the caches, the others then read them
        train_set = UNetDataset(data_dir, extractor, split="train", seed=config.train.seed,
                                samples_per_clip=d.samples_per_clip, **dataset_args)
        train_set.prepare()
    holder: dict[str, Any] = {}

    def completed_steps() -> int:  # the trainer is built below, after the step and the validation it is given
        return holder["trainer"].step

    step = UNetTrainingStep(vae, make_scheduler(), weights, loss_models, config.train.seed,
                            config.loss.mixed_noise_alpha, config.loss.uncond_prob, d.latent_memo_frames,
                            pixel_loss_every=config.loss.pixel_loss_every,
                            completed_steps=completed_steps)
    step_fn = step_hook(step) if step_hook is not None else step

    validate = None
    if accelerator.is_main_process:
        validate = _validation_renderer(run_dir, data_dir, records, train_set, extractor, vae, config, device,
                                        loss_models, completed_steps)
    trainer = Trainer(run_dir, unet, checkpoint_config, config.train, train_set, step_fn, validate_fn=validate,
                      collate_fn=collate_unet_batch, accelerator=accelerator, description="unet",
                      on_step_end=on_step_end)
    holder["trainer"] = trainer
    about = f"{len(train_set.clips)} train clips, losses {', '.join(weights.active())}" + (
        f"; validation: {validate.describe()}" if validate is not None else "")
    return fit_and_record(trainer, resume_from, about, RUN_KIND, config, lambda: _inputs(data_dir, config))


def keep_vae_copy(vae: str | Path, run_dir: Path, resumed: bool) -> Path:
    """Copy the VAE folder into ``<run>/vae`` (once); a resumed run must keep the VAE it started with."""
    import shutil
    import tempfile

    from lsync.manifest import TEMP_PREFIX
    from lsync.models.vae import resolve_vae_folder, vae_digest

    source = resolve_vae_folder(vae)
    target = run_dir / RUN_VAE_DIR
    if target.is_dir():
        if vae_digest(target) == vae_digest(source):
            return target
        if resumed:
            raise ConfigError(f"{run_dir} was trained with another VAE than {source}",
                              "resume with the VAE the run started with, or use a new run directory")
        shutil.rmtree(target)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}vae-", dir=run_dir))
    try:
        for file in sorted(source.iterdir()):
            if file.is_file():
                shutil.copy2(file, staging / file.name)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _check_loss_settings(loss: LossSection) -> None:
    if not 0.0 <= loss.uncond_prob <= 1.0:
        raise ConfigError(f"loss.uncond_prob={loss.uncond_prob} is not a probability", "use a value in [0, 1]")
    if loss.mixed_noise_alpha < 0:
        raise ConfigError(f"loss.mixed_noise_alpha={loss.mixed_noise_alpha} is negative", "use 0 or more (1 = LatentSync)")
    if loss.pixel_loss_every < 1:
        raise ConfigError(f"loss.pixel_loss_every={loss.pixel_loss_every} is below 1",
                          "use 1 (pixel losses on every step) or k > 1 (on every k-th step)")
    if loss.pixel_loss_every > 1 and loss.recon_weight == 0:
        raise ConfigError(f"loss.pixel_loss_every={loss.pixel_loss_every} with recon_weight 0 leaves steps with no "
                          "loss at all", "give --recon-weight a value above 0, or set loss.pixel_loss_every=1")


def _validation_renderer(run_dir, data_dir, records, train_set, extractor, vae, config, device, loss_models,
                         current_step):
    """The renderer of the validation video, or None (with a warning) when the data has no ``val`` clip."""
    from lsync.audio.timing import SAMPLES_PER_FRAME
    from lsync.data.unet_dataset import ClipInfo
    from lsync.stages.train_unet_val import ValidationRenderer

    def clip_info(record):
        frames = int(record["num_frames"])
        return ClipInfo(id=record["id"], video=data_dir / record["video"], audio=data_dir / record["audio"],
                        num_frames=frames, num_samples=int(record.get("num_samples", frames * SAMPLES_PER_FRAME)))

    v = config.validation
    if v.frames <= 0:
        return None
    val = [r for r in records if r.get("split") == "val" and (v.clip is None or r["id"] == v.clip)]
    if not val:
        log.warning("%s has no 'val' clip%s: the run trains without validation videos", data_dir,
                    f" '{v.clip}'" if v.clip else "")
        return None
    face = val[0]
    others = [r for r in records if r["id"] != face["id"] and (v.audio_clip is None or r["id"] == v.audio_clip)]
    if not others:
        log.warning("no clip other than '%s' to take validation audio from: no validation videos", face["id"])
        return None
    scorer = None
    if loss_models.syncnet is not None:
        scorer = SyncScorer(loss_models.syncnet, loss_models.syncnet_resolution)
    elif config.syncnet:  # sync loss off, but a SyncNet was named: it still scores the videos
        scorer = load_syncnet(config, device)
    return ValidationRenderer(run_dir, clip_info(face), clip_info(others[0]), train_set.cache, extractor,
                              train_set.encoder_id, vae, config.model.resolution, v, device, scorer, current_step,
                              audio_feat_length=train_set.audio_feat_length)


def _inputs(data_dir: Path, config: TrainUNetConfig) -> list[dict[str, Any]]:
    """The manifest's inputs: the data directory, and the --init and --syncnet files or directories, with digests."""
    from lsync.manifest import describe_input, file_digest, is_complete
    from lsync.checkpoints import WEIGHTS_NAME

    inputs = [describe_input(data_dir)]
    if config.model.vae:
        from lsync.models.vae import resolve_vae_folder, vae_digest

        folder = resolve_vae_folder(config.model.vae)
        inputs.append({"path": str(folder.resolve()), "kind": "vae", "digest": vae_digest(folder)})
    for path, kind in ((config.init, "unet-init"), (config.syncnet, "syncnet")):
        if path is None:
            continue
        p = Path(path)
        if p.is_dir() and not is_complete(p):  # a checkpoint (or unfinished run): its weights identify it
            entry = {"path": str(p.resolve()), "kind": kind}
            if (p / WEIGHTS_NAME).is_file():
                entry["digest"] = file_digest(p / WEIGHTS_NAME)
            inputs.append(entry)
        else:
            inputs.append(describe_input(p, kind))
    return inputs
