"""Make the README's demo figure from a finished ``lsync demo`` work directory.

    python docs/demo_figure.py lsync-demo docs/demo.png

Top: frames of the demo's lip-synced video (the face region, every ``--every`` frames); bottom: the generated
mouth's lip gap (what ``lsync eval mouth`` measured) beside the loudness of the driving audio and of the
source clip's own audio, each standardised, with the r values from the demo's ``eval_mouth`` step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def standardise(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64)
    return (values - np.nanmean(values)) / (np.nanstd(values) + 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--every", type=int, default=6, help="frame step of the strip")
    parser.add_argument("--count", type=int, default=10, help="frames in the strip")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lsync.media.audio import frame_rms, load_audio
    from lsync.media.video import VideoReader

    (row,) = json.loads((args.workdir / "eval_mouth" / "results.json").read_text())
    frames = VideoReader(Path(row["video"])).read_all()  # (N, H, W, 3) uint8
    height, width = frames.shape[1:3]
    # The synthetic face sits at (W/2, 0.45 H), about 0.45 W wide: a square around its lower half.
    size = int(0.36 * width)
    top, left = int(0.47 * height) - size // 2, width // 2 - size // 2
    picks = list(range(0, len(frames), args.every))[: args.count]
    strip = np.concatenate([frames[i, top:top + size, left:left + size] for i in picks], axis=1)

    gap = np.array(row["series"]["lip_gap"], np.float64)
    driving = np.array(row["series"]["driving_rms"], np.float64)
    source = frame_rms(load_audio(Path(row["source"]), 16000), 640)[: len(gap)]
    t = np.arange(len(gap))

    figure, (image_axis, plot_axis) = plt.subplots(2, 1, figsize=(9, 4.2), gridspec_kw={"height_ratios": [1, 1.3]})
    image_axis.imshow(strip)
    image_axis.set_xticks([(k + 0.5) * size for k in range(len(picks))], [str(i) for i in picks], fontsize=7)
    image_axis.set_yticks([])
    image_axis.set_title(f"lsync demo: a held-out face driven by another clip's audio (frames {picks[0]}..{picks[-1]})",
                         fontsize=9)
    plot_axis.plot(t, standardise(driving), color="tab:blue", lw=1, label="driving audio loudness (RMS)")
    plot_axis.plot(t, standardise(source), color="tab:gray", lw=0.8, alpha=0.7, label="source's own audio loudness")
    plot_axis.plot(t, standardise(gap), color="tab:red", lw=1.4, label="generated lip gap / face height")
    for i in picks:
        plot_axis.axvline(i, color="k", lw=0.3, alpha=0.3)
    plot_axis.set_xlabel("frame (25 fps)", fontsize=8)
    plot_axis.set_yticks([])
    plot_axis.tick_params(labelsize=7)
    plot_axis.set_title(f"r_drive = {row['r_drive']:.2f}, r_source = {row['r_source']:.2f} (standardised series)",
                        fontsize=9)
    plot_axis.legend(fontsize=7, loc="upper right", ncol=3)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=90)
    print(args.out)


if __name__ == "__main__":
    main()
