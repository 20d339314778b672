"""Which curves share a chart panel: one per loss term, validation beside its train curve, the two mouth
correlations (driving and source audio) on one axis."""

from __future__ import annotations

from lsync.training.metrics import chart_panels, plot_metrics


def test_each_term_gets_a_panel_and_the_mouth_correlations_share_one(tmp_path):
    records = [
        {"step": 5, "train/loss": 1.0, "train/recon": 0.9, "train/recon_weighted": 0.9, "train/sync": 0.7},
        {"step": 10, "train/loss": 0.8, "train/recon": 0.7, "train/sync": 0.6, "val/sync_cosine": 0.4,
         "val/sync_windows": 3.0, "val/mouth_r_drive": 0.5, "val/mouth_r_source": 0.1, "val/mouth_face_share": 1.0},
    ]
    panels = dict(chart_panels(records))
    assert list(panels)[0] == "loss"
    assert panels["recon"] == ["train/recon"] and panels["sync"] == ["train/sync"]
    assert panels["mouth_r"] == ["val/mouth_r_drive", "val/mouth_r_source"]
    assert "mouth_face_share" in panels and not any("windows" in k or "weighted" in k for k in panels)
    plot_metrics(records, tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
