"""Detector registry, MediaPipe landmarks against the golden rule, a real 1080x1920 frame, InsightFace errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from lsync.errors import InputError, UsageError
from lsync.face.detect import (
    IF106_LEFT_BROW,
    IF106_NOSE,
    IF106_RIGHT_BROW,
    Face,
    MediaPipeDetector,
    available_detectors,
    get_detector,
    landmarks3_from_106,
    landmarks3_from_mesh,
)


def read_rgb(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def golden_cases(reference):
    folder = reference / "align"
    return folder, json.loads((folder / "align_cases.json").read_text())


@pytest.fixture(scope="module")
def detector():
    with get_detector("mediapipe", max_faces=2) as built:
        yield built


def decode_frames(path, indices) -> dict[int, np.ndarray]:
    """RGB frames ``indices`` of a video, decoded in order by OpenCV."""
    capture = cv2.VideoCapture(str(path))
    frames, index = {}, 0
    try:
        while index <= max(indices):
            ok, frame = capture.read()
            assert ok, f"cannot decode frame {index} of {path}"
            if index in indices:
                frames[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    return frames


@pytest.fixture(scope="module")
def golden_video_frames(golden_cases, golden_media) -> dict[int, np.ndarray]:
    """The full frames the align golden's crops were cut from (sources.json names the video), by frame index."""
    _, cases = golden_cases
    indices = {case["frame_index"] for case in cases["per_frame"]}
    return decode_frames(golden_media("align/align_cases.json", "video"), indices)


@pytest.fixture(scope="module")
def media_first_frames(media_videos) -> list[tuple[object, np.ndarray]]:
    """(path, first frame) of every video in the media folder."""
    return [(path, decode_frames(path, {0})[0]) for path in media_videos]


def golden_inputs(folder, cases):
    """(name, image, landmarks3) for every per-frame case and sequence step."""
    seen = {}
    for case in cases["per_frame"]:
        seen[case["input_png"]] = (case["name"], case["landmarks3"])
    for step in cases.get("sequence", {}).get("steps", []):
        seen.setdefault(step["input_png"], (f"seq{step['k']}", step["landmarks3"]))
    return [(name, read_rgb(folder / png), np.asarray(lm, np.float32)) for png, (name, lm) in seen.items()]


@pytest.mark.golden
def test_single_pass_mediapipe_reproduces_golden_landmarks(golden_cases):
    folder, cases = golden_cases
    assert cases["mediapipe"]["left_brow_indices"] == [70, 63, 105, 66, 107]
    with MediaPipeDetector(refine=False, detect_size=None) as single_pass:
        for name, image, expected in golden_inputs(folder, cases):
            faces = single_pass.detect(image)
            assert len(faces) == 1, name
            np.testing.assert_allclose(faces[0].landmarks3, expected, atol=1.0, err_msg=name)


@pytest.mark.golden
def test_two_pass_mediapipe_stays_close_to_golden(golden_cases, detector):
    folder, cases = golden_cases
    for name, image, expected in golden_inputs(folder, cases):
        faces = detector([image])[0]
        assert len(faces) == 1, name
        assert np.abs(faces[0].landmarks3 - expected).max() <= 3.0, name
        assert np.all(faces[0].landmarks3 == np.round(faces[0].landmarks3))  # rounded like the reference


@pytest.mark.golden
@pytest.mark.media
def test_full_hd_frame_landmarks_match_the_golden_crop(golden_cases, golden_video_frames, detector):
    """Detected on the whole frame, the landmarks land where the golden's crops put them (plus the crop offset)."""
    _, cases = golden_cases
    assert cases["per_frame"], "no per_frame cases in align_cases.json"
    fine_errors, coarse_errors = [], []
    with MediaPipeDetector(refine=False, detect_size=None) as coarse:
        for case in cases["per_frame"]:
            x0, y0 = case["crop_xyxy_in_original_frame"][:2]
            expected = np.asarray(case["landmarks3"], np.float32) + [x0, y0]
            frame = golden_video_frames[case["frame_index"]]
            faces = detector([frame])[0]
            assert len(faces) == 1, case["name"]
            fine_errors.append(np.abs(faces[0].landmarks3 - expected).max())
            coarse_errors.append(np.abs(coarse.detect(frame)[0].landmarks3 - expected).max())
    # OpenCV's decoder differs from decord by a few levels; the landmarks still agree within a couple of pixels
    assert max(fine_errors) <= 3.0, fine_errors
    # without the full-resolution crop pass, FaceMesh on the whole frame is much less precise
    assert np.mean(coarse_errors) > np.mean(fine_errors)


@pytest.mark.media
def test_media_frame_detection_is_consistent_across_detect_sizes(media_first_frames, detector):
    from lsync.media.probe import probe

    for path, frame in media_first_frames:
        info = probe(path)
        assert frame.shape[:2] == (info.height, info.width), path.name
        face = detector.detect(frame)[0]
        x0, y0, x1, y1 = face.bbox
        # a talking head: one face, a sizeable part of the frame, inside it
        assert 0.05 * min(frame.shape[:2]) < min(x1 - x0, y1 - y0) and x1 - x0 < frame.shape[1], path.name
        assert 0 <= x0 and 0 <= y0 and x1 <= frame.shape[1] and y1 <= frame.shape[0] and 0 < face.score <= 1
        # the landmark points lie inside the face box: brows above the nose
        assert face.landmarks3[2, 1] > face.landmarks3[:2, 1].max()
        assert x0 <= face.landmarks3[:, 0].min() and face.landmarks3[:, 0].max() <= x1
        with MediaPipeDetector(detect_size=960) as other:
            assert np.abs(other.detect(frame)[0].landmarks3 - face.landmarks3).max() <= 3.0, path.name


@pytest.mark.golden
def test_two_faces_are_found_largest_first(golden_cases, detector):
    folder, cases = golden_cases
    image = read_rgb(folder / cases["per_frame"][0]["input_png"])
    small = cv2.resize(image, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    canvas = np.full((image.shape[0], image.shape[1] + small.shape[1] + 40, 3), 90, np.uint8)
    canvas[:, : image.shape[1]] = image
    canvas[: small.shape[0], image.shape[1] + 40 :] = small
    faces = detector.detect(canvas)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].center[0] < image.shape[1] < faces[1].center[0]
    with MediaPipeDetector(max_faces=1) as single:
        assert len(single.detect(canvas)) == 1


def test_blank_frame_has_no_faces(detector):
    assert detector([np.full((120, 160, 3), 128, np.uint8)]) == [[]]
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10), np.uint8))


def test_landmarks3_rules():
    points = np.zeros((106, 2))
    points[list(IF106_LEFT_BROW)] = [10.4, 20.0]
    points[list(IF106_RIGHT_BROW)] = [50.0, 21.6]
    points[list(IF106_NOSE)] = [[30.0, 40.0], [31.0, 40.0], [30.0, 41.0], [31.0, 41.0]]
    np.testing.assert_array_equal(landmarks3_from_106(points), [[10, 20], [50, 22], [30, 40]])
    np.testing.assert_allclose(landmarks3_from_106(points, round_points=False), [[10.4, 20], [50, 21.6], [30.5, 40.5]])
    mesh = np.random.default_rng(0).random((468, 2)) * 100
    expected = [mesh[[70, 63, 105, 66, 107]].mean(0), mesh[[300, 293, 334, 296, 336]].mean(0)]
    expected.append(mesh[[5, 4, 45, 275]].mean(0))
    np.testing.assert_allclose(landmarks3_from_mesh(mesh, round_points=False), expected, rtol=1e-6)
    assert Face(np.array([0, 0, 10, 20], np.float32), 1.0, np.zeros((3, 2), np.float32)).area == 200


def test_registry_names_and_errors(tmp_path):
    assert {"mediapipe", "insightface"} <= set(available_detectors())
    with pytest.raises(UsageError, match="unknown face detector"):
        get_detector("nope")
    missing = tmp_path / "no pack here ü"
    with pytest.raises(InputError) as error:
        get_detector("insightface", models_dir=missing)
    message = error.value.message
    assert str(missing) in message and "buffalo_l" in message and "\n" not in message


def test_insightface_without_package_names_the_fix(tmp_path):
    try:
        import insightface  # noqa: F401

        pytest.skip("insightface is installed here")
    except ImportError:
        pass
    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    for name in ("det_10g.onnx", "2d106det.onnx"):
        (pack / name).write_bytes(b"")
    with pytest.raises(InputError, match="insightface package is not installed"):
        get_detector("insightface", models_dir=tmp_path)
