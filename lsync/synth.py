"""Synthetic talking-head clips with known audio-visual sync, for tests and smoke runs.

Each clip is the real face photo ``skimage.data.astronaut()`` with slow random head motion and a mouth
whose opening follows the loudness of the clip's own speech-like audio:

* audio - a voiced harmonic source with a gliding pitch (about 90-240 Hz), shaped by formant resonances
  that move between vowels, cut into syllables at 3-6 Hz (``syllable_rate``; slower for clearer speech) with
  smooth amplitude bumps, grouped into phrases separated by pauses;
* mouth - opening(t) = smoothed RMS of the audio in video frame t's window (640 samples at 16 kHz,
  i.e. 1/25 s); closed lips at silence, the jaw and lower lip pulled down by a monotonic displacement
  field (``cv2.remap``) that stays inside the region the mouth mask repaints, and the gap between the lips
  is filled with a dark mouth interior;
* head - small smooth translation, roll and zoom (sums of slow random sinusoids), one ``cv2.warpAffine``
  from the photo to the output frame.

Everything is drawn from ``numpy.random.default_rng([seed, clip_index])`` and encoded with fixed
thread counts and bit-exact flags, so the same seed gives identical files (and therefore identical
decoded frames and samples).

``av_offset`` makes known out-of-sync clips: with ``av_offset = K`` the sound that belongs to video
frame t is heard at frame t + K (positive K = audio late, negative = audio early).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lsync.console import get_logger, progress
from lsync.manifest import write_manifest
from lsync.media.audio import write_wav
from lsync.media.video import VideoWriter

log = get_logger(__name__)

# ----------------------------------------------------------------------------------------------- the photo
# Face geometry of skimage.data.astronaut() (512 x 512 px), measured once with MediaPipe FaceMesh 0.10.21
# (static_image_mode=True, refine_landmarks=False); (x, y) pixels. Indices are FaceMesh landmark ids.
FACE_CENTER = (225.0, 124.0)  # centre of the landmark bounding box x 178..272, y 72..175
FACE_WIDTH = 94.0  # landmark 234 (x 179.0) to 454 (x 270.9)
UPPER_INNER_LIP = (223.5, 142.7)  # 13
LOWER_INNER_LIP = (223.1, 149.6)  # 14
INNER_MOUTH_CORNERS = ((204.7, 140.2), (243.0, 142.6))  # 78, 308
CHIN = (221.3, 175.5)  # 152

# The lips' gap is curved (she smiles): centre line y = GAP_Y + tilt*dx - curve*dx^2, dx = x - MOUTH_X,
# fitted through the midpoint of 13/14 and the two inner corners.
MOUTH_X = 223.3
GAP_Y = 146.1
GAP_TILT = 0.063
GAP_CURVE = 0.013
# Signed offsets from that line (source px): inner edges of the lips, chin, where the neck stops moving.
UPPER_LIP_V = UPPER_INNER_LIP[1] - GAP_Y  # -3.4
LOWER_LIP_V = LOWER_INNER_LIP[1] - GAP_Y  # +3.5
CHIN_V = CHIN[1] - GAP_Y  # +29.4
ABOVE_FIXED_V = -10.0  # nose/upper face: never moves
# The displacement stays inside the region LatentSync's mouth mask repaints (lsync.face.mask): otherwise pixels
# the U-Net sees unmasked would tell it the mouth opening of the frame it is painting, and a model trained on
# them copies the source's mouth instead of following the audio (measured on the aligned 64 px face: the wider
# jaw (22 px) and longer neck fade (25 px) changed kept pixels by up to 17 levels, these by at most 1).
NECK_FIXED_V = CHIN_V + 12.0  # below the chin the displacement fades out
JAW_HALF_WIDTH = 18.0  # super-Gaussian half width of the moving jaw (source px)
MOUTH_HALF_WIDTH = 17.0  # half width of the dark mouth interior
MAX_JAW_DROP = 10.0  # default lower-lip drop at full opening (source px; ~24 px in the output)
# The chin follows the lower lip down by at most this much (source px; at rest the lips close by pulling it up
# ~6.6 px), so a larger --jaw-drop stretches the mouth rather than pushing the chin out of the repainted region.
MAX_CHIN_DROP = 4.0
JAW_DROP_LIMIT = CHIN_V - LOWER_LIP_V  # the largest --jaw-drop: the open lower lip stays above the chin
UPPER_LIP_LIFT = 0.0  # upper lip rises by this fraction of the jaw drop (0: it would show beside the nose)
REST_CLOSURE = 0.95  # at opening 0 the lower lip rises by 95 % of the photo's lip gap: closed lips
INTERIOR_RGB = np.array([52.0, 16.0, 22.0], dtype=np.float32)

# ----------------------------------------------------------------------------------------------- the audio
# (F1, F2, F3) Hz of five vowels (/a/, /e/, /i/, /o/, /u/), after Peterson & Barney's averages.
VOWEL_FORMANTS = np.array(
    [[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]],
    dtype=np.float64,
)
FORMANT_BANDWIDTHS = np.array([90.0, 110.0, 170.0])
FORMANT_GAINS = np.array([1.0, 0.6, 0.3])
MAX_HARMONIC_HZ = 5000.0

DEFAULT_SIZE = (512, 640)  # (width, height) of the output video
DEFAULT_SIZE_TWO_FACES = (1024, 640)  # two 512 x 640 panels side by side
#: Who the soundtrack of a two-face clip belongs to: the left face, the right face, both (their speech mixed),
#: or none (both mouths stay closed and the soundtrack is a third, off-screen voice).
SPEAKERS = ("left", "right", "both", "none")
#: Range of the per-face size factor of two-face clips (1 = the single-face framing, ~45 % of the panel width).
FACE_SCALE_RANGE = (0.6, 1.0)
DEFAULT_SYLLABLE_RATE = (3.0, 6.0)  # syllables per second, drawn per phrase: conversational speech
DEFAULT_SAMPLE_RATE = 48000
SAMPLE_RATE_16K_FRAME = 640  # samples per 25 fps frame at 16 kHz: the window of the mouth envelope


@dataclasses.dataclass(frozen=True)
class SynthClip:
    """One written clip: its file name (relative to the output directory) and how it was made."""

    name: str
    path: Path
    index: int
    av_offset_frames: int
    num_frames: int
    fps: float
    duration_s: float
    sample_rate: int
    faces: list[dict[str, Any]] | None = None  # two-face clips: side, scale, first-frame box of each face
    speaker: str | None = None  # two-face clips: whose speech the soundtrack is (SPEAKERS)

    def record(self) -> dict[str, Any]:
        row = {
            "name": self.name,
            "index": self.index,
            "av_offset_frames": self.av_offset_frames,
            "num_frames": self.num_frames,
            "fps": self.fps,
            "duration_s": self.duration_s,
            "sample_rate": self.sample_rate,
        }
        if self.faces is not None:
            row.update(faces=self.faces, speaker=self.speaker,
                       speaker_index=SPEAKERS.index(self.speaker) if self.speaker in SPEAKERS[:2] else None)
        return row


def check_jaw_drop(jaw_drop: float) -> float:
    """``jaw_drop`` itself, or a ValueError when it is not in (0, :data:`JAW_DROP_LIMIT`] photo px."""
    if not 0 < jaw_drop <= JAW_DROP_LIMIT:
        raise ValueError(f"jaw_drop must be in (0, {JAW_DROP_LIMIT:.1f}] photo px, got {jaw_drop}")
    return jaw_drop


def synthesize(
    out_dir: str | os.PathLike,
    clips: int,
    seconds: float,
    seed: int,
    fps: float = 25.0,
    av_offset: int | Sequence[int] = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    crf: int = 18,
    preset: str = "veryfast",
    faces: int = 1,
    speaker: str | Sequence[str] = "random",
    syllable_rate: tuple[float, float] = DEFAULT_SYLLABLE_RATE,
    jaw_drop: float = MAX_JAW_DROP,
) -> list[SynthClip]:
    """Write ``clips`` talking-head mp4 files (H.264 + AAC) and a ``raw`` ``lsync.json`` into ``out_dir``.

    Args:
        clips: number of files, named ``synth_000.mp4``, ``synth_001.mp4``, ...
        seconds: length of each clip (rounded to whole frames).
        seed: clip i is drawn from ``numpy.random.default_rng([seed, i])``.
        fps: video frame rate (the audio envelope window follows it).
        av_offset: frames the audio is shifted against the video, one value for all clips or one per
            clip; positive = audio late (the sound of frame t is heard at frame t + K).
        size: (width, height), even numbers, the face is framed for portrait sizes like 512 x 640.
        sample_rate: audio rate of the files (48 kHz or 44.1 kHz AAC).
        faces: 1, or 2 for two faces side by side (each in its own half of the frame, each with its own size
            factor in :data:`FACE_SCALE_RANGE`, head motion and speech-like audio, mouth following that speech).
        speaker: two faces only: whose speech is the soundtrack, one of :data:`SPEAKERS` or ``random`` (left or
            right, drawn per clip), one value for all clips or one per clip. Recorded per clip in the manifest
            (``speaker``, ``speaker_index``, ``faces``).
        syllable_rate: (lowest, highest) syllables per second; each phrase draws its rate between them. The same
            seed gives the same phrases and pitches at another rate, only stretched.
        jaw_drop: how far the lower lip drops at full opening (photo px; the face is ~2.4x larger in a
            512 x 640 frame). At the loudest syllables the face mesh's lip gap reaches ~7 % of the face height
            with the default 10 px, ~11 % with 14 and ~15 % with 18 (wide-open speech).

    Returns:
        the clips written, in order; their ``record()`` dicts are also the manifest's ``summary.files``.
    """
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"seconds and fps must be positive, got {seconds}, {fps}")
    low_rate, high_rate = (float(r) for r in syllable_rate)
    if not 0 < low_rate <= high_rate:
        raise ValueError(f"syllable_rate must be 0 < low <= high, got {syllable_rate}")
    offsets = [int(av_offset)] * clips if np.isscalar(av_offset) else [int(k) for k in av_offset]
    if len(offsets) != clips:
        raise ValueError(f"av_offset has {len(offsets)} values for {clips} clips")
    if faces not in (1, 2):
        raise ValueError(f"faces must be 1 or 2, got {faces}")
    speakers = [speaker] * clips if isinstance(speaker, str) else list(speaker)
    if len(speakers) != clips or any(s not in (*SPEAKERS, "random") for s in speakers):
        raise ValueError(f"speaker must be one of {SPEAKERS + ('random',)} (one for all clips or one per clip), "
                         f"got {speaker!r}")
    check_jaw_drop(jaw_drop)
    if faces == 2 and size == DEFAULT_SIZE:
        size = DEFAULT_SIZE_TWO_FACES
    width, height = size
    num_frames = int(round(seconds * fps))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    photo = astronaut_photo()
    written = []
    with progress() as bar:
        task = bar.add_task("synth", total=clips, unit="clips")
        for index, offset in enumerate(offsets):
            rng = np.random.default_rng([seed, index])
            if faces == 1:
                clip = _write_clip(out, index, rng, photo, num_frames, fps, offset, width, height, sample_rate,
                                   crf, preset, (low_rate, high_rate), jaw_drop)
            else:
                clip = _write_two_face_clip(out, index, seed, speakers[index], photo, num_frames, fps, offset,
                                            width, height, sample_rate, crf, preset, jaw_drop)
            log.debug("wrote %s (%d frames, audio offset %+d frames)", clip.path, num_frames, offset)
            written.append(clip)
            bar.update(task, advance=1)

    config = {"seed": seed, "clips": clips, "seconds": seconds, "fps": fps, "av_offset": offsets,
              "size": [width, height], "sample_rate": sample_rate, "crf": crf, "preset": preset,
              "syllable_rate": [low_rate, high_rate], "jaw_drop": jaw_drop}
    if faces == 2:
        config.update(faces=2, speaker=speakers)
    summary = {"num_clips": clips, "files": [clip.record() for clip in written],
               "av_offset_sign": "positive = audio late: the sound of video frame t is heard at frame t + K"}
    write_manifest(out, "raw", config, summary=summary)
    return written


def astronaut_photo() -> np.ndarray:
    """The 512 x 512 RGB face photo all clips are made from."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut())


def _write_clip(out: Path, index: int, rng: np.random.Generator, photo: np.ndarray, num_frames: int,
                fps: float, offset: int, width: int, height: int, sample_rate: int, crf: int,
                preset: str, syllable_rate: tuple[float, float] = DEFAULT_SYLLABLE_RATE,
                jaw_drop: float = MAX_JAW_DROP) -> SynthClip:
    # Speech long enough for both windows: the mouth follows speech frames [mouth_start, +num_frames),
    # the file's audio plays speech frames [audio_start, +num_frames); audio_start - mouth_start = -offset
    # puts the sound of mouth frame t at audio frame t + offset.
    total_frames = num_frames + abs(offset)
    speech = speech_like_audio(rng, _frame_boundary(total_frames, fps, sample_rate), sample_rate, syllable_rate)
    envelope = frame_envelope(speech, total_frames, fps, sample_rate)
    mouth_start, audio_start = (offset, 0) if offset >= 0 else (0, -offset)
    opening = mouth_opening(envelope)[mouth_start: mouth_start + num_frames]
    first_sample = _frame_boundary(audio_start, fps, sample_rate)
    audio = speech[first_sample: _frame_boundary(audio_start + num_frames, fps, sample_rate)]
    motion = head_motion(rng, num_frames, fps)

    name = f"synth_{index:03d}.mp4"
    path = out / name
    with tempfile.TemporaryDirectory(prefix=".lsync-synth-", dir=out) as tmp:
        wav = write_wav(Path(tmp) / "audio.wav", audio, sample_rate)
        # Fixed thread count + bit-exact flags: equal frames and samples always encode to equal bytes.
        with VideoWriter(path, fps, width, height, crf=crf, preset=preset, audio_path=wav, audio_bitrate="128k",
                         shortest=False, threads=2, bitexact=True) as writer:
            for t in range(num_frames):
                writer.write(render_frame(photo, opening[t], motion[t], width, height, jaw_drop=jaw_drop))
    return SynthClip(name=name, path=path, index=index, av_offset_frames=offset, num_frames=num_frames,
                     fps=fps, duration_s=num_frames / fps, sample_rate=sample_rate)


def _write_two_face_clip(out: Path, index: int, seed: int, speaker: str, photo: np.ndarray, num_frames: int,
                         fps: float, offset: int, width: int, height: int, sample_rate: int, crf: int,
                         preset: str, jaw_drop: float = MAX_JAW_DROP) -> SynthClip:
    """Two faces side by side, each drawn like a single-face clip in its half of the frame with its own speech;
    the soundtrack is the speech of ``speaker`` (``random``: left or right, drawn from the clip's rng)."""
    layout = np.random.default_rng([seed, index, 2])
    if speaker == "random":
        speaker = SPEAKERS[int(layout.integers(2))]
    scales = layout.uniform(*FACE_SCALE_RANGE, size=2)
    panel = width // 2
    total_frames = num_frames + abs(offset)
    mouth_start, audio_start = (offset, 0) if offset >= 0 else (0, -offset)
    audio_slice = slice(_frame_boundary(audio_start, fps, sample_rate),
                        _frame_boundary(audio_start + num_frames, fps, sample_rate))
    voices, openings, motions = [], [], []
    for face in range(2):
        rng = np.random.default_rng([seed, index, face])
        speech = speech_like_audio(rng, _frame_boundary(total_frames, fps, sample_rate), sample_rate)
        envelope = frame_envelope(speech, total_frames, fps, sample_rate)
        opening = mouth_opening(envelope)[mouth_start: mouth_start + num_frames]
        if speaker == "none":
            opening = np.zeros_like(opening)  # silent faces: lips closed throughout
        voices.append(speech[audio_slice])
        openings.append(opening)
        motions.append(head_motion(rng, num_frames, fps))
    if speaker in ("left", "right"):
        audio = voices[SPEAKERS.index(speaker)]
    elif speaker == "both":
        audio = 0.5 * (voices[0] + voices[1])
    else:  # an off-screen voice nobody's lips follow
        off_screen = np.random.default_rng([seed, index, 3])
        audio = speech_like_audio(off_screen, _frame_boundary(total_frames, fps, sample_rate),
                                  sample_rate)[audio_slice]

    placed = []
    for face, side in enumerate(("left", "right")):
        matrix = _frame_matrix(motions[face][0], panel, height, float(scales[face]))
        center = matrix @ np.array([*FACE_CENTER, 1.0])
        half = 0.5 * FACE_WIDTH * abs(float(np.linalg.det(matrix[:, :2]))) ** 0.5
        x_shift = face * panel
        placed.append({"side": side, "scale": round(float(scales[face]), 4),
                       "center": [round(float(center[0] + x_shift), 1), round(float(center[1]), 1)],
                       "box": [round(float(v), 1) for v in (center[0] + x_shift - half, center[1] - 1.1 * half,
                                                            center[0] + x_shift + half, center[1] + 1.1 * half)]})

    name = f"synth2_{index:03d}.mp4"
    path = out / name
    with tempfile.TemporaryDirectory(prefix=".lsync-synth-", dir=out) as tmp:
        wav = write_wav(Path(tmp) / "audio.wav", audio.astype(np.float32), sample_rate)
        with VideoWriter(path, fps, width, height, crf=crf, preset=preset, audio_path=wav, audio_bitrate="128k",
                         shortest=False, threads=2, bitexact=True) as writer:
            for t in range(num_frames):
                halves = [render_frame(photo, openings[face][t], motions[face][t], panel, height,
                                       float(scales[face]), jaw_drop) for face in range(2)]
                frame = np.concatenate(halves, axis=1)
                if frame.shape[1] != width:  # odd panel split: pad the last column
                    frame = np.pad(frame, ((0, 0), (0, width - frame.shape[1]), (0, 0)), mode="edge")
                writer.write(frame)
    return SynthClip(name=name, path=path, index=index, av_offset_frames=offset, num_frames=num_frames,
                     fps=fps, duration_s=num_frames / fps, sample_rate=sample_rate, faces=placed, speaker=speaker)


def _frame_boundary(frame: int, fps: float, sample_rate: int) -> int:
    """First audio sample of video frame ``frame``."""
    return int(round(frame * sample_rate / fps))


# ================================================================================================ audio
def speech_like_audio(rng: np.random.Generator, num_samples: int, sample_rate: int,
                      syllable_rate: tuple[float, float] = DEFAULT_SYLLABLE_RATE) -> np.ndarray:
    """(num_samples,) float32 in about [-0.6, 0.6]: phrases of voiced syllables with pauses between."""
    syllables = _syllable_plan(rng, num_samples / sample_rate, syllable_rate)
    t = np.arange(num_samples) / sample_rate
    envelope = np.zeros(num_samples)
    for onset, duration, amplitude, _, _ in syllables:
        lo, hi = int(onset * sample_rate), min(num_samples, int((onset + duration) * sample_rate))
        if hi > lo:
            u = (t[lo:hi] - onset) / duration
            envelope[lo:hi] += amplitude * np.clip(np.sin(np.pi * u), 0.0, None) ** 1.5

    # Pitch and formants are interpolated between syllable centres, so they glide rather than jump.
    centres = np.array([s[0] + s[1] / 2 for s in syllables])
    f0 = np.interp(t, centres, [s[3] for s in syllables])
    formants = np.stack([np.interp(t, centres, VOWEL_FORMANTS[[s[4] for s in syllables], j]) for j in range(3)])
    voiced = _harmonic_source(f0, formants, sample_rate)
    aspiration = rng.standard_normal(num_samples) * 0.03
    signal = envelope * (voiced + aspiration) + rng.standard_normal(num_samples) * 3e-4
    return (0.6 * signal / np.max(np.abs(signal))).astype(np.float32)


def _syllable_plan(rng: np.random.Generator, seconds: float, syllable_rate: tuple[float, float] = DEFAULT_SYLLABLE_RATE,
                   ) -> list[tuple[float, float, float, float, int]]:
    """(onset s, duration s, amplitude, pitch Hz, vowel index) for syllables covering ``seconds``."""
    syllables = []
    cursor = rng.uniform(0.05, 0.3)
    while cursor < seconds:
        rate = rng.uniform(*syllable_rate)  # syllables per second within this phrase
        count = int(rng.integers(2, 8))
        base_pitch = rng.uniform(110.0, 200.0)
        for k in range(count):
            duration = rng.uniform(0.8, 1.25) / rate
            declination = 1.12 - 0.25 * k / max(1, count - 1)  # pitch falls over a phrase
            pitch = float(np.clip(base_pitch * declination * rng.uniform(0.9, 1.1), 90.0, 240.0))
            syllables.append((cursor, duration, rng.uniform(0.35, 1.0), pitch, int(rng.integers(5))))
            cursor += duration
        cursor += rng.uniform(0.2, 0.6)  # pause between phrases
    return syllables


def _harmonic_source(f0: np.ndarray, formants: np.ndarray, sample_rate: int) -> np.ndarray:
    """Sum of harmonics of ``f0`` (N,), each weighted by the formant envelope ``formants`` (3, N) at its
    frequency and a -6 dB/octave source tilt; the weights are computed every 32 samples and interpolated."""
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    coarse = slice(None, None, 32)
    coarse_index = np.arange(len(f0))[coarse]
    every = np.arange(len(f0))
    limit = min(MAX_HARMONIC_HZ, 0.45 * sample_rate)
    out = np.zeros(len(f0))
    for k in range(1, int(limit // f0.min()) + 1):
        freq = k * f0[coarse]
        resonance = FORMANT_GAINS[:, None] / (1 + ((freq - formants[:, coarse]) / FORMANT_BANDWIDTHS[:, None]) ** 2)
        weight = (resonance.sum(axis=0) + 0.02) / k * (freq < limit)
        out += np.interp(every, coarse_index, weight) * np.sin(k * phase)
    return out


def frame_envelope(audio: np.ndarray, num_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """(num_frames,) RMS of ``audio`` in each video frame's window."""
    bounds = [_frame_boundary(t, fps, sample_rate) for t in range(num_frames + 1)]
    return np.array([np.sqrt(np.mean(np.square(audio[a:b], dtype=np.float64))) if b > a else 0.0
                     for a, b in zip(bounds, bounds[1:])])


def mouth_opening(envelope: np.ndarray) -> np.ndarray:
    """Frame RMS -> opening in [0, 1]: lightly smoothed, scaled so the loudest 1 % opens fully."""
    padded = np.pad(envelope, 1, mode="edge")
    smooth = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
    return np.clip(smooth / max(np.percentile(smooth, 99), 1e-8), 0.0, 1.0)


# ================================================================================================ video
def head_motion(rng: np.random.Generator, num_frames: int, fps: float) -> np.ndarray:
    """(num_frames, 4): x/y translation (output px), roll (degrees), zoom factor - slow smooth drifts."""
    t = np.arange(num_frames) / fps
    amplitude = np.array([8.0, 6.0, 2.5, 0.03])
    tracks = []
    for scale in amplitude:
        freqs = rng.uniform(0.08, 0.4, size=3)
        phases = rng.uniform(0, 2 * np.pi, size=3)
        weights = rng.uniform(0.3, 1.0, size=3)
        wave = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0) / weights.sum()
        tracks.append(scale * wave)
    motion = np.stack(tracks, axis=1)
    motion[:, 3] = 1.0 + motion[:, 3] + amplitude[3]  # zoom only in (1 .. 1.06), never reveal the border
    return motion


def render_frame(photo: np.ndarray, opening: float, motion: np.ndarray, width: int, height: int,
                 face_scale: float = 1.0, jaw_drop: float = MAX_JAW_DROP) -> np.ndarray:
    """One (height, width, 3) uint8 frame: the photo with the mouth opened by ``opening`` in [0, 1],
    then moved by ``motion`` = (tx, ty, roll degrees, zoom); ``face_scale`` < 1 draws a smaller face."""
    face = open_mouth(photo, opening, jaw_drop)
    return cv2.warpAffine(face, _frame_matrix(motion, width, height, face_scale), (width, height),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def _frame_matrix(motion: np.ndarray, width: int, height: int, face_scale: float = 1.0) -> np.ndarray:
    """Photo -> output affine: the face centre goes to (width/2, 0.45*height), face width ~45 % of width
    (times ``face_scale``)."""
    tx, ty, roll, zoom = (float(v) for v in motion)
    scale = 0.45 * width / FACE_WIDTH * zoom * face_scale
    matrix = cv2.getRotationMatrix2D(FACE_CENTER, roll, scale)
    matrix[0, 2] += width / 2 - FACE_CENTER[0] + tx
    matrix[1, 2] += 0.45 * height - FACE_CENTER[1] + ty
    return matrix


# The region of the photo the mouth warp touches (x0, y0, x1, y1), with a margin around every anchor.
# Identity anchors far outside it (np.interp clamps, it does not extrapolate).
_FAR = 1e4
_ROI = (int(MOUTH_X - 50), int(GAP_Y + ABOVE_FIXED_V - 12), int(MOUTH_X + 50), int(GAP_Y + NECK_FIXED_V + 12))


def open_mouth(photo: np.ndarray, opening: float, jaw_drop: float = MAX_JAW_DROP) -> np.ndarray:
    """The photo with the mouth closed at ``opening = 0`` and opened by ``opening * jaw_drop`` px.

    In the photo the lips are parted over the teeth. For every column x the vertical mapping
    output v -> source v (v = offset from the curved lip gap) is piecewise linear through anchors: the
    lower inner lip edge moves to ``gap(x) * (REST_CLOSURE - 1) + jaw(x)`` below the upper one, the chin
    moves with it (down by at most :data:`MAX_CHIN_DROP`), the upper lip rises a little as the mouth opens,
    and the face above and the neck below stay in place. Increasing anchors give a warp without fold-over;
    at rest the teeth band is squeezed to a sliver (closed lips), when open it is stretched and painted as the
    dark mouth interior.
    """
    opening = float(np.clip(opening, 0.0, 1.0))
    x0, y0, x1, y1 = _ROI
    xs = np.arange(x0, x1, dtype=np.float64)
    ys = np.arange(y0, y1, dtype=np.float64)
    dx = xs - MOUTH_X
    gap_y = GAP_Y + GAP_TILT * dx - GAP_CURVE * dx**2
    profile = np.exp(-0.5 * (dx / JAW_HALF_WIDTH) ** 4)  # full in the middle, fading sideways
    rest_gap = LOWER_LIP_V - UPPER_LIP_V
    jaw = (opening * jaw_drop - REST_CLOSURE * rest_gap) * profile  # lower lip shift (down > 0)
    chin = np.minimum(jaw, MAX_CHIN_DROP * profile)
    lift = UPPER_LIP_LIFT * opening * jaw_drop * profile

    map_y = np.empty((len(ys), len(xs)), dtype=np.float32)
    interior_alpha = np.zeros((len(ys), len(xs)), dtype=np.float32)
    for col in range(len(xs)):
        v = ys - gap_y[col]
        top, bottom = UPPER_LIP_V - lift[col], LOWER_LIP_V + jaw[col]
        source_v = np.interp(
            v,
            [-_FAR, ABOVE_FIXED_V, top, bottom, CHIN_V + chin[col], NECK_FIXED_V, _FAR],
            [-_FAR, ABOVE_FIXED_V, UPPER_LIP_V, LOWER_LIP_V, CHIN_V, NECK_FIXED_V, _FAR],
        )
        map_y[:, col] = source_v + gap_y[col]
        # Interior: the band between the moved inner lip edges, narrowing towards the corners; it fades
        # in over the first pixels of opening so closed lips never show a dark line.
        taper = np.sqrt(max(0.0, 1.0 - (dx[col] / MOUTH_HALF_WIDTH) ** 2))
        half = 0.5 * (bottom - top) * 0.9 * taper
        if half > 0:
            opacity = 0.92 * min(1.0, (bottom - top) / 3.0)
            distance = np.abs(v - 0.5 * (top + bottom))
            interior_alpha[:, col] = opacity * np.clip(half - distance + 0.5, 0.0, 1.0)  # ~1 px soft edge
    map_x = np.broadcast_to(xs.astype(np.float32), map_y.shape).copy()
    # Map coordinates are absolute photo pixels: remap reads the whole photo, writes only the ROI.
    roi = cv2.remap(photo, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    alpha = interior_alpha[..., None]
    roi = roi.astype(np.float32) * (1 - alpha) + INTERIOR_RGB * alpha
    result = photo.copy()
    result[y0:y1, x0:x1] = np.clip(np.round(roi), 0, 255).astype(np.uint8)
    return result
