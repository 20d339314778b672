"""Face detectors behind one small interface: a list of RGB frames in, a list of :class:`Face` per frame out.

Two back-ends, chosen by name with :func:`get_detector`:

* ``mediapipe`` (default, offline, CPU): MediaPipe face detection finds the faces on a downscaled copy of the
  frame, then FaceMesh runs on a full-resolution crop around each face. The second pass matters: FaceMesh run
  on a whole 1080x1920 frame places the landmarks 10-30 px away from where it places them on a face crop, while
  the two-pass result agrees with the golden (crop-based) landmarks within about 1 px.
* ``insightface``: SCRFD + 106-point landmarks from the ``buffalo_l`` pack, which is what LatentSync uses
  (imported lazily; needs the ``insightface`` and ``onnxruntime`` packages and the pack on disk).

Both reduce their landmarks to LatentSync's three alignment points (left eyebrow centre, right eyebrow centre,
nose centre) in pixel ``(x, y)`` of the frame they were given, rounded to integers by default like the reference.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from lsync.console import get_logger
from lsync.errors import InputError, UsageError

log = get_logger(__name__)

#: MediaPipe FaceMesh (468 points) indices averaged into the three alignment points.
MESH_LEFT_BROW = (70, 63, 105, 66, 107)  # eyebrow on the image's left
MESH_RIGHT_BROW = (300, 293, 334, 296, 336)  # eyebrow on the image's right
MESH_NOSE = (5, 4, 45, 275)
#: InsightFace 2d106det indices used by LatentSync 1.5 (``ImageProcessor.affine_transform``).
IF106_LEFT_BROW = (43, 48, 49, 51, 50)
IF106_RIGHT_BROW = (101, 102, 103, 104, 105)
IF106_NOSE = (74, 77, 83, 86)

INSIGHTFACE_PACK_FILES = ("det_10g.onnx", "2d106det.onnx")

__all__ = [
    "Face",
    "FaceDetector",
    "InsightFaceDetector",
    "MediaPipeDetector",
    "available_detectors",
    "get_detector",
    "landmarks3_from_106",
    "landmarks3_from_mesh",
    "register_detector",
]


@dataclass
class Face:
    """One detected face in frame pixels.

    bbox: (4,) float32 ``(x0, y0, x1, y1)``; score: detector confidence (1.0 where the back-end gives none);
    landmarks3: (3, 2) float32 left brow, right brow, nose ``(x, y)``; landmarks: (N, 2) float32 full set or None.
    """

    bbox: np.ndarray
    score: float
    landmarks3: np.ndarray
    landmarks: np.ndarray | None = None

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        return float(self.bbox[3] - self.bbox[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.bbox[0] + self.bbox[2]) / 2, (self.bbox[1] + self.bbox[3]) / 2], np.float32)


def _three_points(points: np.ndarray, left, right, nose, round_points: bool) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    three = np.stack([points[list(left)].mean(0), points[list(right)].mean(0), points[list(nose)].mean(0)])
    return (np.round(three) if round_points else three).astype(np.float32)


def landmarks3_from_mesh(points: np.ndarray, round_points: bool = True) -> np.ndarray:
    """(468+, 2) FaceMesh pixel points -> (3, 2) alignment points (the golden data's rule)."""
    return _three_points(points, MESH_LEFT_BROW, MESH_RIGHT_BROW, MESH_NOSE, round_points)


def landmarks3_from_106(points: np.ndarray, round_points: bool = True) -> np.ndarray:
    """(106, 2) InsightFace points -> (3, 2) alignment points.

    With rounding this is LatentSync's rule: the 106 points are rounded to integers first, averaged, rounded again.
    """
    points = np.asarray(points, dtype=np.float64)
    if round_points:
        points = np.round(points)
    return _three_points(points, IF106_LEFT_BROW, IF106_RIGHT_BROW, IF106_NOSE, round_points)


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
    return np.ascontiguousarray(frame)


def _bbox_of(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float32)


class FaceDetector:
    """Interface: ``detector(frames)`` -> per frame a list of :class:`Face`, largest first."""

    name = "base"

    def detect(self, frame: np.ndarray) -> list[Face]:
        raise NotImplementedError

    def __call__(self, frames: Sequence[np.ndarray] | np.ndarray) -> list[list[Face]]:
        """frames: a list of (H, W, 3) uint8 RGB frames or an (N, H, W, 3) array."""
        return [self.detect(frame) for frame in frames]

    def close(self) -> None:
        """Release native resources (graphs, sessions)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MediaPipeDetector(FaceDetector):
    """Two-pass MediaPipe detector (offline, CPU).

    Args:
        max_faces: most faces returned per frame (largest first). Keep it above 1 when the result feeds
            :func:`lsync.face.track.track_faces`, so the subject is still seen when a larger face appears.
        detect_size: long side of the copy the first pass runs on (None: the frame as is). The second pass
            always works on full-resolution crops, so this only affects which faces are found.
        crop_scale: side of the square landmark crop as a multiple of the detected box's longer side.
        min_score: detection confidence threshold of the first pass.
        refine: run the crop pass; False runs FaceMesh once on the whole (downscaled) frame, which is the
            golden data's recipe on already-cropped images but inaccurate on large frames.
        round_landmarks: round ``landmarks3`` to integers like the reference.
        keep_landmarks: also return the 468 mesh points.
    """

    name = "mediapipe"

    def __init__(
        self,
        max_faces: int = 4,
        detect_size: int | None = 640,
        crop_scale: float = 1.8,
        min_score: float = 0.5,
        refine: bool = True,
        round_landmarks: bool = True,
        keep_landmarks: bool = False,
    ):
        try:
            import mediapipe as mp
        except ImportError as error:  # pragma: no cover - mediapipe is a core dependency
            raise InputError("mediapipe is not installed", "pip install mediapipe==0.10.21") from error
        self.max_faces = max_faces
        self.detect_size = detect_size
        self.crop_scale = crop_scale
        self.min_score = min_score
        self.refine = refine
        self.round_landmarks = round_landmarks
        self.keep_landmarks = keep_landmarks
        with _native_stderr_muted():  # graph creation and first runs print native start-up chatter
            # Full-range model: finds small faces in wide shots as well as close-ups.
            self._boxes = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_score)
            self._frame_mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=max_faces, refine_landmarks=False
            )
            # Two faces so that a neighbour's face in the same crop cannot replace the one we are refining.
            self._crop_mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=2, refine_landmarks=False
            )
            self._warm_up()

    def _warm_up(self) -> None:
        """Run every graph once on a blank image while MediaPipe's native start-up warnings are muted.

        Its C++ core prints a few lines of harmless chatter (absl logging before initialisation) on the first
        call of each graph, straight to file descriptor 2, where Python logging cannot filter it.
        """
        blank = np.zeros((64, 64, 3), np.uint8)
        for graph in (self._boxes, self._frame_mesh, self._crop_mesh):
            graph.process(blank)

    def close(self) -> None:
        for graph in (self._boxes, self._frame_mesh, self._crop_mesh):
            graph.close()

    @staticmethod
    def _mesh_points(mesh, image: np.ndarray) -> list[np.ndarray]:
        """All faces FaceMesh finds in ``image``, as (468, 2) pixel arrays."""
        height, width = image.shape[:2]
        result = mesh.process(image)
        if not result.multi_face_landmarks:
            return []
        scale = np.array([width, height], np.float64)
        return [
            np.array([(point.x, point.y) for point in face.landmark], np.float64) * scale
            for face in result.multi_face_landmarks
        ]

    def _downscaled(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        long_side = max(frame.shape[:2])
        if not self.detect_size or long_side <= self.detect_size:
            return frame, 1.0
        scale = self.detect_size / long_side
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return small, scale

    def _first_pass(self, frame: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray | None]]:
        """Rough faces: (box in frame pixels, score, mesh points or None), from the downscaled copy."""
        small, _ = self._downscaled(frame)
        height, width = frame.shape[:2]
        found = []
        result = self._boxes.process(small)
        for detection in result.detections or []:
            box = detection.location_data.relative_bounding_box
            x0, y0 = box.xmin * width, box.ymin * height
            corners = np.array([x0, y0, x0 + box.width * width, y0 + box.height * height])
            found.append((corners, detection.score[0], None))
        if not found:
            # The box model can miss faces FaceMesh still finds (e.g. extreme close-ups): fall back to the mesh.
            for points in self._mesh_points(self._frame_mesh, small):
                points = points * np.array([width / small.shape[1], height / small.shape[0]])
                found.append((_bbox_of(points), 1.0, points))
        found.sort(key=lambda item: -(item[0][2] - item[0][0]) * (item[0][3] - item[0][1]))
        return found[: self.max_faces]

    def _refine(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """Mesh points of the face in ``box``, from a square full-resolution crop around it."""
        height, width = frame.shape[:2]
        center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        half = max(box[2] - box[0], box[3] - box[1]) * self.crop_scale / 2
        x0, y0 = int(max(0, center[0] - half)), int(max(0, center[1] - half))
        x1, y1 = int(min(width, center[0] + half)), int(min(height, center[1] + half))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        candidates = self._mesh_points(self._crop_mesh, np.ascontiguousarray(frame[y0:y1, x0:x1]))
        if not candidates:
            return None
        candidates = [points + np.array([x0, y0]) for points in candidates]
        return min(candidates, key=lambda points: np.linalg.norm(points.mean(axis=0) - center))

    def detect(self, frame: np.ndarray) -> list[Face]:
        frame = _check_frame(frame)
        if not self.refine:
            small, _ = self._downscaled(frame)
            scale = np.array([frame.shape[1] / small.shape[1], frame.shape[0] / small.shape[0]])
            rough = [(None, 1.0, points * scale) for points in self._mesh_points(self._frame_mesh, small)]
        else:
            rough = self._first_pass(frame)
        faces = []
        for box, score, points in rough:
            if self.refine:
                refined = self._refine(frame, box)
                points = refined if refined is not None else points
            if points is None:
                continue
            faces.append(
                Face(
                    bbox=_bbox_of(points),
                    score=float(score),
                    landmarks3=landmarks3_from_mesh(points, self.round_landmarks),
                    landmarks=points.astype(np.float32) if self.keep_landmarks else None,
                )
            )
        faces.sort(key=lambda face: -face.area)
        return faces


def _insightface_missing(models_dir: Path, what: str) -> InputError:
    return InputError(
        f"{what} (looked in {models_dir})",
        "install it with `pip install insightface onnxruntime` and unpack buffalo_l.zip "
        "(https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip, or LatentSync's "
        f"checkpoints/auxiliary/models/buffalo_l) into {models_dir}/models/buffalo_l, or use the mediapipe detector",
    )


def _find_insightface_root(models_dir: Path, pack: str) -> Path:
    """The ``root`` FaceAnalysis expects (``root/models/<pack>/*.onnx``), accepting the pack folder itself too."""
    candidates = [models_dir / "models" / pack, models_dir / pack, models_dir]
    for folder in candidates:
        if all((folder / name).is_file() for name in INSIGHTFACE_PACK_FILES):
            if folder.parent.name == "models" and folder.name == pack:
                return folder.parent.parent
            raise _insightface_missing(models_dir, f"the {pack} pack must sit in a folder named models/{pack}")
    raise _insightface_missing(models_dir, f"InsightFace pack {pack} ({', '.join(INSIGHTFACE_PACK_FILES)}) not found")


class InsightFaceDetector(FaceDetector):
    """SCRFD + 106 landmarks (``buffalo_l``), LatentSync's detector.

    Args:
        models_dir: folder holding ``models/buffalo_l`` (LatentSync: ``checkpoints/auxiliary``), or the pack itself.
        det_size: square detector input (LatentSync uses 512).
        device: "cpu" or "cuda[:n]" (CUDA needs onnxruntime-gpu).
        min_score, min_size (w, h), aspect_range (w/h): LatentSync's filters (0.5, (50, 80), (0.2, 1.5)).
        max_faces: most faces returned (largest first); None for all.
        swap_channels: feed BGR to the models. LatentSync feeds its RGB frames unchanged, so the default keeps
            that to reproduce its crops.
    """

    name = "insightface"

    def __init__(
        self,
        models_dir: str | Path | None = None,
        pack: str = "buffalo_l",
        det_size: int = 512,
        device: str = "cpu",
        min_score: float = 0.5,
        min_size: tuple[int, int] = (50, 80),
        aspect_range: tuple[float, float] = (0.2, 1.5),
        max_faces: int | None = 1,
        round_landmarks: bool = True,
        keep_landmarks: bool = False,
        swap_channels: bool = False,
    ):
        if models_dir is None:
            raise InputError("the insightface detector needs models_dir", "pass the folder holding models/buffalo_l")
        models_dir = Path(models_dir)
        root = _find_insightface_root(models_dir, pack)
        try:
            from insightface.app import FaceAnalysis
        except ImportError as error:
            raise _insightface_missing(models_dir, "the insightface package is not installed") from error
        use_cuda = str(device).startswith("cuda")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        ctx_id = (int(str(device).split(":")[1]) if ":" in str(device) else 0) if use_cuda else -1
        self._app = FaceAnalysis(
            name=pack, root=str(root), allowed_modules=["detection", "landmark_2d_106"], providers=providers
        )
        self._app.prepare(ctx_id=ctx_id, det_size=(det_size, det_size))
        self.min_score = min_score
        self.min_size = min_size
        self.aspect_range = aspect_range
        self.max_faces = max_faces
        self.round_landmarks = round_landmarks
        self.keep_landmarks = keep_landmarks
        self.swap_channels = swap_channels

    def _accept(self, bbox: np.ndarray, score: float) -> bool:
        # Integer box like the reference's filter.
        x0, y0, x1, y1 = bbox.astype(np.int64).tolist()
        width, height = x1 - x0, y1 - y0
        if width < self.min_size[0] or height < self.min_size[1] or height <= 0:
            return False
        return self.aspect_range[0] <= width / height <= self.aspect_range[1] and score >= self.min_score

    def detect(self, frame: np.ndarray) -> list[Face]:
        frame = _check_frame(frame)
        image = np.ascontiguousarray(frame[:, :, ::-1]) if self.swap_channels else frame
        faces = []
        for found in self._app.get(image):
            bbox = np.asarray(found.bbox, np.float32)
            score = float(found.det_score)
            if not self._accept(bbox, score):
                continue
            points = np.asarray(found.landmark_2d_106, np.float32)
            faces.append(
                Face(
                    bbox=bbox,
                    score=score,
                    landmarks3=landmarks3_from_106(points, self.round_landmarks),
                    landmarks=points if self.keep_landmarks else None,
                )
            )
        faces.sort(key=lambda face: -face.area)
        return faces[: self.max_faces] if self.max_faces else faces


_REGISTRY: dict[str, Callable[..., FaceDetector]] = {
    MediaPipeDetector.name: MediaPipeDetector,
    InsightFaceDetector.name: InsightFaceDetector,
}


def register_detector(name: str, factory: Callable[..., FaceDetector]) -> None:
    """Make ``get_detector(name, ...)`` build detectors with ``factory(**kwargs)``."""
    _REGISTRY[name] = factory


def available_detectors() -> list[str]:
    return sorted(_REGISTRY)


@contextlib.contextmanager
def _native_stderr_muted():
    """Point fd 2 at /dev/null for the block (unless --verbose), so native libraries' chatter is hidden."""
    from lsync.console import is_verbose

    if is_verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def get_detector(name: str = "mediapipe", **kwargs) -> FaceDetector:
    """Build a detector by name (``mediapipe`` or ``insightface``); kwargs go to its constructor."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        choices = ", ".join(available_detectors())
        raise UsageError(f"unknown face detector {name!r}", f"choose one of {choices}") from None
    return factory(**kwargs)


def detector_from_config(config) -> FaceDetector:
    """The detector a :class:`~lsync.face.config.FaceConfig` asks for (``detector``, ``detector_models``,
    ``detect_size``, ``max_faces``): preprocessing, inference and evaluation build it the same way."""
    if config.detector == "insightface":
        return get_detector("insightface", models_dir=config.detector_models, max_faces=config.max_faces)
    return get_detector("mediapipe", detect_size=config.detect_size, max_faces=config.max_faces)
