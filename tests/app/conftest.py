"""Inputs for the ``lsync app`` tests: short synthetic talking faces (``lsync synth``), made once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from lsync.media.ffmpeg import file_arg, run_ffmpeg

@dataclass(frozen=True)
class AppMedia:
    video: Path  # 2 s synthetic talking face with its own audio
    other_video: Path  # another 2 s face
    audio: Path  # 2 s of speech (wav) from another clip
    short_audio: Path  # 1.2 s of speech (wav)
    faceless: Path  # 1 s black video with sound
    video_only: Path  # the face without an audio stream (an "audio" without sound)
    text_as_mp4: Path  # a text file named .mp4


@pytest.fixture(scope="session")
def app_media(tmp_path_factory) -> AppMedia:
    from lsync.synth import synthesize

    root = tmp_path_factory.mktemp("app media é")
    clips = synthesize(root / "synth", clips=3, seconds=2.0, seed=11, size=(256, 320))
    video, other_video, speaker = (clip.path for clip in sorted(clips, key=lambda clip: clip.index))
    audio, short_audio = root / "speech.wav", root / "short speech.wav"
    run_ffmpeg(["-i", file_arg(speaker), "-vn", "-c:a", "pcm_s16le", "-y", file_arg(audio)], "cut the audio")
    run_ffmpeg(["-i", file_arg(speaker), "-vn", "-t", "1.2", "-c:a", "pcm_s16le", "-y", file_arg(short_audio)],
               "cut the audio")
    faceless = root / "black.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "color=c=black:s=256x320:r=25:d=1", "-i", file_arg(audio), "-t", "1",
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-y",
                file_arg(faceless)], "make a black video")
    video_only = root / "no sound.mp4"
    run_ffmpeg(["-i", file_arg(video), "-an", "-c:v", "copy", "-y", file_arg(video_only)], "drop the audio")
    text_as_mp4 = root / "notes.mp4"
    text_as_mp4.write_text("meeting notes, not a video\n" * 20, encoding="utf-8")
    return AppMedia(video, other_video, audio, short_audio, faceless, video_only, text_as_mp4)
