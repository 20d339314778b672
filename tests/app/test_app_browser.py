"""``lsync app`` in a real browser: the server is started as a user starts it (``lsync app --preset tiny`` on a
free local port) and Debian's headless Chromium, driven by Playwright, uploads, previews, runs and downloads.

Nothing downloads a browser: Chromium comes from the system (``.ci/run`` installs Debian's ``chromium``) or from
``$LSYNC_CHROMIUM``; without one the tests skip and say so. ``$LSYNC_SCREENSHOTS``, when set, gets screenshots
of the page before, during and after the runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from lsync.media.probe import probe
from lsync.stages.infer import InferConfig

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# Headless on a machine without a display, a GPU or a network: no sandbox (root in CI), no calls home.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--no-proxy-server"]
RUN_TIMEOUT_MS = 300_000  # a whole run on a loaded 2-core CI machine
# Any other server round trip (probing an upload, a preview). Playwright's 5 s default is too short when the
# suite's other worker keeps both cores busy: probing an upload once took longer than that.
EXPECT_TIMEOUT_MS = 30_000


def find_chromium() -> str | None:
    candidates = [os.environ.get("LSYNC_CHROMIUM")] + [shutil.which(name) for name in
                                                         ("chromium", "chromium-browser", "google-chrome")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip("gradio", reason="Gradio is not installed: pip install -e '.[app]'")
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install -e '.[test]'")
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium to drive: install Debian's chromium (apt-get install chromium, as .ci/run does) "
                    "or set LSYNC_CHROMIUM to a Chromium executable")
    return path


# ================================================================================================ the server
@dataclass
class Server:
    url: str
    out_dir: Path
    process: subprocess.Popen
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes through a proxy
    with opener.open(url, timeout=timeout) as response:
        return response.read()


@pytest.fixture(scope="module")
def server(chromium, tmp_path_factory):
    root = tmp_path_factory.mktemp("app server")
    out_dir, log = root / "jobs é", root / "server.log"
    port = _free_port()
    env = {**os.environ, "XDG_CACHE_HOME": str(root / "cache")}  # a private face-track cache
    command = [sys.executable, "-m", "lsync", "app", "--preset", "tiny", "--port", str(port), "--out-dir",
               str(out_dir), "--set", "steps=2", "--set", "detect_size=320", "--set", "encode_preset=ultrafast"]
    with open(log, "w", encoding="utf-8") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}/", out_dir, process, log)
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            pytest.fail(f"lsync app exited with {process.returncode}:\n{server.log_tail()}")
        try:
            _get(server.url, timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"lsync app did not answer on {server.url} within 180 s:\n{server.log_tail()}")
            time.sleep(0.5)
    yield server
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def browser(chromium, server, tmp_path_factory):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)  # process-wide: every expect() of this module's tests
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium profile")), executable_path=chromium, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 1000})
        yield context
        context.close()


# ================================================================================================ helpers
def open_page(browser, server):
    page = browser.new_page()
    page.goto(server.url)
    page.wait_for_selector("#run", timeout=60_000)
    return page


def upload(page, elem_id: str, path: Path) -> None:
    """Upload ``path`` into a component, first clearing what it holds (a loaded one has no file input)."""
    clear = page.locator(f"#{elem_id} button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))


def shot(page, name: str) -> None:
    folder = os.environ.get("LSYNC_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def watch_progress(page) -> None:
    """Record every text the progress overlay of the result shows (runs may be too quick to poll)."""
    page.evaluate("""() => {
        window.lsyncProgress = [];
        const grab = () => {
            const box = document.querySelector('#result-video');
            const text = box ? box.innerText.trim() : '';
            if (text && !window.lsyncProgress.includes(text)) window.lsyncProgress.push(text);
        };
        new MutationObserver(grab).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")


def video_metadata(page, selector: str) -> dict:
    """Duration and width the page's <video> reports once the browser has read the file."""
    return page.evaluate("""(selector) => new Promise((resolve) => {
        const video = document.querySelector(selector);
        const done = () => resolve({duration: video.duration, width: video.videoWidth, error: null});
        if (video.readyState >= 1) return done();
        video.addEventListener('loadedmetadata', done);
        video.addEventListener('error', () => resolve({error: video.error ? video.error.code : 'error'}));
        setTimeout(() => resolve({error: 'timeout', readyState: video.readyState}), 20000);
    })""", selector)


def status_text(page) -> str:
    return page.locator("#status").inner_text().strip()


def click_and_wait(page, button: str) -> str:
    """Click a job's button and wait for its result; the status line (an ok or an error box)."""
    before = status_text(page)
    page.click(button)
    page.wait_for_function("""(before) => {
        const box = document.querySelector('#status .lsync-status');
        return box && (box.classList.contains('ok') || box.classList.contains('error'))
            && box.innerText.trim() !== before;
    }""", arg=before, timeout=RUN_TIMEOUT_MS)
    return status_text(page)


def run_folder(status: str) -> Path:
    match = re.search(r"folder (.+)$", status)
    assert match, status
    return Path(match[1].strip())


def check_output(folder: Path, audio: Path, name: str | None = None) -> dict:
    """The output ``name`` (or the folder's only one) that lsync.json lists: one frame per 40 ms of ``audio``,
    with that audio; returns it, its frame count and the folder's resolved config."""
    manifest = json.loads((folder / "lsync.json").read_text(encoding="utf-8"))
    outputs = manifest["summary"]["outputs"]
    if name is None:
        (name,) = outputs
    video = folder / name
    info, source = probe(video), probe(audio)
    assert info.num_frames == round(source.audio_duration_s * 25) == outputs[name]["frames"]["total"]
    assert info.has_audio and abs(info.audio_duration_s - source.audio_duration_s) < 0.05
    return {"video": video, "frames": info.num_frames, "config": manifest["config"]}


def choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in a dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def expect_file(page, elem_id: str, name: str) -> None:
    """A file component lists ``name`` (as a cell of its table; its text splits the name's extension off)."""
    from playwright.sync_api import expect

    expect(page.locator(f"#{elem_id}").get_by_role("cell", name=name, exact=True)).to_be_visible(timeout=30_000)


def set_number(page, selector: str, value) -> None:
    box = page.locator(selector)
    box.fill(str(value))
    box.press("Enter")


# ================================================================================================ tests
def test_upload_preview_run_and_download(browser, server, app_media):
    from playwright.sync_api import expect

    page = open_page(browser, server)
    shot(page, "01-empty-page")
    # Every setting a job takes is on the page, with what it offers.
    for elem_id, label in {"preset": "Model preset", "steps": "DDIM steps", "guidance": "Guidance", "seed": "Seed",
                           "loop": "Audio longer than the video", "face-select": "Face to follow",
                           "codec": "Codec", "mask": "Mask PNG"}.items():
        expect(page.locator(f"#{elem_id}")).to_contain_text(label)
    expect(page.locator("#preset input")).to_have_value("tiny")  # the server's --preset
    expect(page.locator("#steps input[type=number]")).to_have_value("2")  # and its --set steps=2
    page.locator("#loop input").click()
    assert [text.strip("✓ \n") for text in page.get_by_role("option").all_inner_texts()] == \
        ["pingpong", "bounce", "loop", "hold"]
    page.keyboard.press("Escape")
    assert page.locator("#face-select input[type=radio]").evaluate_all("(radios) => radios.map(r => r.value)") == \
        ["largest", "center"]
    assert page.get_by_role("tab").all_inner_texts() == ["Lip-sync", "Batch"]
    upload(page, "video-in", app_media.video)
    upload(page, "audio-in", app_media.audio)
    expect(page.locator("#media-info")).to_contain_text("256x320, 25 fps, 2.00 s")
    expect(page.locator("#media-info")).to_contain_text("speech.wav: 48000 Hz")

    # Preview the chunk around 1 s: the strip appears, for frame 25.
    preview_at = page.locator("#preview-at input[type=number]")
    preview_at.fill("1")
    preview_at.press("Enter")
    status = click_and_wait(page, "#preview")
    assert "preview: frame 25 (1.00 s) of chunk 16-31" in status, status
    strip = page.locator("#strip img")
    expect(strip).to_be_visible()
    # Visible is not loaded (the img is lazy): wait for the PNG itself, then check its width.
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=strip.element_handle(),
                           timeout=EXPECT_TIMEOUT_MS)
    assert page.evaluate("(img) => img.naturalWidth", strip.element_handle()) >= 4 * 160
    shot(page, "02-preview")

    # Run: a progress bar with the stage, rate and ETA, then the player, the download link and lsync.json.
    watch_progress(page)
    page.click("#run")
    # (the screenshot shows the bar at its denoise stage)
    page.wait_for_function("window.lsyncProgress.some((text) => text.includes('denoise'))", timeout=RUN_TIMEOUT_MS)
    shot(page, "03-running")
    page.wait_for_function("document.querySelector('#status').innerText.trim().startsWith('done: ')"
                           " || document.querySelector('#status .lsync-status.error')", timeout=RUN_TIMEOUT_MS)
    status = status_text(page)
    assert status.startswith("done: "), f"{status}\n{server.log_tail()}"
    page.wait_for_selector("#result-video video", timeout=30_000)
    shot(page, "04-finished")
    progress = page.evaluate("window.lsyncProgress")
    assert any(re.search(r"denoise \(3/4\) · \d+/50 frames · [\d.]+ frames/s · ETA \d+:\d\d", text)
               for text in progress), progress

    folder = run_folder(status)
    assert folder.parent == server.out_dir and folder.name.startswith("run-")
    output = check_output(folder, app_media.audio)
    assert "50 frames, 50 lip-synced, 0 passed through; faces from cache" in status  # the preview's track
    metadata = video_metadata(page, "#result-video video")
    assert metadata["error"] is None and abs(metadata["duration"] - 2.0) < 0.1 and metadata["width"] == 256
    links = [page.locator("#download a").nth(i).get_attribute("href")
             for i in range(page.locator("#download a").count())]
    served = {Path(urllib.parse.unquote(href)).name: _get(urllib.parse.urljoin(server.url, href))
              for href in links if href}
    assert served[output["video"].name] == output["video"].read_bytes()  # the download is the file itself
    assert served["lsync.json"] == (folder / "lsync.json").read_bytes()
    manifest = page.locator("#manifest").inner_text()
    assert "frames_synced" in manifest and "timings_s" in manifest
    page.close()


def test_an_unreadable_upload_shows_the_cli_error_and_the_next_run_works(browser, server, app_media, tmp_path):
    from playwright.sync_api import expect

    page = open_page(browser, server)
    upload(page, "video-in", app_media.text_as_mp4)
    upload(page, "audio-in", app_media.short_audio)
    expect(page.locator("#media-info .lsync-status.error")).to_contain_text("is not a readable media file")
    status = click_and_wait(page, "#run")
    shot(page, "05-error")
    assert page.locator("#status .lsync-status.error").count() == 1, status

    # The page says exactly what `lsync infer` says about the same file.
    (uploaded,) = server.out_dir.glob(f"uploads/*/{app_media.text_as_mp4.name}")
    cli = subprocess.run([sys.executable, "-m", "lsync", "infer", str(uploaded), str(app_media.short_audio),
                          "--preset", "tiny", "--out-dir", str(tmp_path / "cli")], capture_output=True, text=True)
    assert cli.returncode == 2 and status == cli.stderr.strip()
    assert not list(server.out_dir.glob("run-*/notes*"))

    # The server is still there and the next run on the same page works.
    upload(page, "video-in", app_media.other_video)
    expect(page.locator("#media-info")).not_to_contain_text("lsync: error")
    status = click_and_wait(page, "#run")
    assert status.startswith("done: "), f"{status}\n{server.log_tail()}"
    assert check_output(run_folder(status), app_media.short_audio)["frames"] == 30
    assert server.process.poll() is None
    page.close()


def test_two_tabs_run_at_once_and_each_gets_its_own_output(browser, server, app_media, tmp_path):
    import cv2
    import numpy as np

    # Tab b picks other settings, so each job must run with its own tab's (and write its own folder).
    mask = tmp_path / "upper two thirds.png"
    image = np.zeros((256, 256, 3), np.uint8)
    image[:170] = 255  # white keeps, black is repainted
    cv2.imwrite(str(mask), image)
    tabs = {"a": open_page(browser, server), "b": open_page(browser, server)}
    audios = {"a": app_media.audio, "b": app_media.short_audio}
    for name, page in tabs.items():
        upload(page, "video-in", app_media.video)
        upload(page, "audio-in", audios[name])
        page.wait_for_selector("#media-info :text('audio')", timeout=30_000)
    page = tabs["b"]
    set_number(page, "#steps input[type=number]", 3)
    set_number(page, "#seed input", 7)
    choose(page, "loop", "bounce")
    choose(page, "codec", "ffv1")
    page.locator("#face-select label:has-text('center')").click()
    upload(page, "mask", mask)
    expect_file(page, "mask", mask.name)

    for page in tabs.values():
        page.click("#run")
    folders = {}
    for name, page in tabs.items():
        page.wait_for_selector("#status .lsync-status.ok, #status .lsync-status.error", timeout=RUN_TIMEOUT_MS)
        status = status_text(page)
        assert status.startswith("done: "), f"{status}\n{server.log_tail()}"
        page.wait_for_selector("#result-video video", timeout=30_000)
        assert video_metadata(page, "#result-video video")["error"] is None  # ffv1 plays through its H.264 copy
        folders[name] = run_folder(status)
        shot(page, f"06-tab-{name}")
    assert folders["a"] != folders["b"] and {f.parent for f in folders.values()} == {server.out_dir}
    a, b = (check_output(folders[name], audios[name]) for name in ("a", "b"))
    assert (a["frames"], b["frames"]) == (50, 30)
    assert a["video"].suffix == ".mp4" and b["video"].suffix == ".mkv"
    settings = ("steps", "seed", "loop", "codec", "face_select")
    defaults = InferConfig()  # tab a kept the page's defaults: the server's config (steps=2 from its --set)
    assert [a["config"][key] for key in settings] == [2, defaults.seed, defaults.loop, defaults.codec,
                                                      defaults.face_select]
    assert [b["config"][key] for key in settings] == [3, 7, "bounce", "ffv1", "center"]
    assert a["config"]["mask"] is None and Path(b["config"]["mask"]).name == mask.name
    for page in tabs.values():
        page.close()


def test_the_batch_tab_runs_the_rows_of_a_pairs_csv(browser, server, app_media, tmp_path):
    from playwright.sync_api import expect

    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"video,audio,name\n{app_media.video.name},{app_media.short_audio.name},first take\n"
                     f"{app_media.other_video.name},{app_media.short_audio.name},second\n", encoding="utf-8")
    page = open_page(browser, server)
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-videos input[type=file]").set_input_files([str(app_media.video),
                                                                     str(app_media.other_video)])
    page.locator("#batch-audios input[type=file]").set_input_files([str(app_media.short_audio)])
    page.locator("#batch-csv input[type=file]").set_input_files(str(pairs))
    for elem_id, name in (("batch-videos", app_media.video.name), ("batch-videos", app_media.other_video.name),
                          ("batch-audios", app_media.short_audio.name), ("batch-csv", pairs.name)):
        expect_file(page, elem_id, name)
    page.click("#batch-run")
    page.wait_for_selector("#batch-status .lsync-status.ok, #batch-status .lsync-status.error",
                           timeout=RUN_TIMEOUT_MS)
    status = page.locator("#batch-status").inner_text().strip()
    assert status.startswith("2 of 2 pairs done; folder "), f"{status}\n{server.log_tail()}"
    folder = run_folder(status)
    assert folder.parent == server.out_dir and folder.name.startswith("batch-")
    for name in ("first take.mp4", "second.mp4"):
        assert check_output(folder, app_media.short_audio, name)["frames"] == 30
        expect(page.locator("#batch-table")).to_contain_text(name)
        expect_file(page, "batch-files", name)
    manifest = json.loads((folder / "lsync.json").read_text(encoding="utf-8"))
    videos = {entry["output"]: Path(entry["inputs"]["video"]["path"]).name
              for entry in manifest["summary"]["outputs"].values()}
    assert videos == {"first take.mp4": app_media.video.name, "second.mp4": app_media.other_video.name}
    shot(page, "07-batch")
    page.close()
