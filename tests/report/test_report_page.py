"""``hpcml report``: a self-contained page whose images are real, rendered by Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil

import numpy as np
import pytest
from browser import chromium, console_messages, find_chromium
from helpers import SPEC, hpcml

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """SPEC run on two ranks, then its report."""
    root = tmp_path_factory.mktemp("report")
    (root / "spec.yaml").write_text(SPEC)
    run = hpcml("run", "-n", "2", "spec.yaml", "--out", "out", "--no-progress", cwd=root)
    assert run.returncode == 0, run.stderr
    proc = hpcml("report", "out", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "report: out/report.html"
    return root / "out" / "report.html"


def pixels(png: bytes) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]


def assert_not_blank(img: np.ndarray, what: str) -> None:
    non_white = (img < 0.94).any(axis=-1).mean()
    assert img.std() > 0.05 and non_white > 0.03, f"{what}: blank ({non_white:.3f} non-white)"


def test_page_is_self_contained_with_real_images(report):
    text = report.read_text()
    assert "<script" not in text and not re.search(r"""(src|href)=["'](?!data:)""", text)
    assert "http://" not in text and "https://" not in text
    for section in ("Leaderboard", "Scores against hyperparameters", "Fold-to-fold spread",
                    "Per-rank timeline"):
        assert f"<h2>{section}</h2>" in text
    assert "Halving rungs" not in text and "Nested" not in text  # a plain grid run
    assert "makespan" in text.lower() or "lower bound" in text.lower()
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', text)
    # logit and tree by parameter, tree's heatmap, the folds, the timeline
    assert [alt for alt, _ in images] == [
        "logit: scores by parameter", "tree: scores by parameter", "tree: heatmap",
        "Fold-to-fold spread", "per-rank timeline"]
    for alt, data in images:
        img = pixels(base64.b64decode(data))
        assert img.shape[0] > 150 and img.shape[1] > 300, alt
        assert_not_blank(img, alt)
    # the leaderboard: both models, mean ± std of both metrics
    table = text[text.index("<table>"):text.index("</table>")]
    assert "logit" in table and "tree" in table and table.count(" ± ") >= 2 * 10


def test_chromium_renders_the_report_without_console_errors(report, tmp_path):
    browser = find_chromium()
    shot = tmp_path / "report.png"
    proc = chromium(browser, report, tmp_path, "--window-size=1200,2600",
                    f"--screenshot={shot}")
    assert shot.exists(), proc.stderr[-2000:]
    assert console_messages(proc.stderr) == []
    assert_not_blank(pixels(shot.read_bytes()), "screenshot")
    shutil.copy(shot, report.parent / "report-screenshot.png")  # kept with the run, to look at
    dom = chromium(browser, report, tmp_path, "--dump-dom")
    assert dom.returncode == 0 and console_messages(dom.stderr) == []
    assert dom.stdout.count("<img") == report.read_text().count("<img") == 5
    assert "Leaderboard" in dom.stdout


def test_the_console_check_sees_an_error(tmp_path):
    """The control: a page that logs an error to the console is caught."""
    browser = find_chromium()
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('boom'); undefined_fn();"
                    "</script></body></html>")
    proc = chromium(browser, page, tmp_path, "--dump-dom")
    messages = console_messages(proc.stderr)
    assert any("boom" in m for m in messages) and any("undefined_fn" in m for m in messages)
