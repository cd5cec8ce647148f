"""VolumeViewer and Panel (radlab.widgets), driven programmatically without a browser."""
import dataclasses
import types

import ipywidgets as W
import numpy as np
import pandas as pd
import pytest
import torch

from radlab.widgets import WINDOW_PRESETS, Panel, VolumeViewer


def _ct_batch(n=2, shape=(12, 16, 20)):
    z, y, x = np.mgrid[:shape[0], :shape[1], :shape[2]]
    body = (y - shape[1] / 2) ** 2 / 40 + (x - shape[2] / 2) ** 2 / 60 < 1
    images, masks = [], []
    for i in range(n):
        lesion = (z - 4 - i) ** 2 + (y - 7) ** 2 + (x - 11 + i) ** 2 < 6
        images.append(np.where(body, 40.0, -1000.0) + 80.0 * lesion)
        masks.append(lesion)
    return (torch.tensor(np.stack(images)[:, None], dtype=torch.float32),   # (N, 1, D, H, W)
            torch.tensor(np.stack(masks)[:, None]))


@pytest.fixture(scope="module")
def viewer():
    images, masks = _ct_batch()
    return VolumeViewer(images, masks, spacing=(3.0, 1.0, 1.0))


def test_viewer_renders_three_views_with_physical_aspect(viewer):
    assert set(viewer.views) == {"axial", "coronal", "sagittal"}
    assert all(v.png.startswith(b"\x89PNG") for v in viewer.views.values())
    assert viewer.views["axial"].axes.get_aspect() == pytest.approx(1.0)      # y / x spacing
    assert viewer.views["coronal"].axes.get_aspect() == pytest.approx(3.0)    # z / x spacing
    # one mm scale: the coronal figure is 12 * 3 mm high, the axial one 16 * 1 mm (+ title band)
    h_cor, h_ax = (viewer.views[n].figure.get_figheight() - 0.25 for n in ("coronal", "axial"))
    assert h_cor / h_ax == pytest.approx(36 / 16)
    assert viewer.modality == "ct" and viewer.window.value == WINDOW_PRESETS["soft tissue (-100..250 HU)"]


def test_viewer_starts_at_the_lesion_centre(viewer):
    viewer.set_patient(0)
    assert viewer.position == (4, 7, 11)
    assert "2 volume(s)" in repr(viewer) and "(3.0, 1.0, 1.0)" in repr(viewer)


def test_moving_one_slider_redraws_only_that_view_without_crosshair():
    images, masks = _ct_batch(n=1)
    v = VolumeViewer(images[0, 0], masks[0, 0], crosshair=False)
    before = {n: (view.png, view.renders) for n, view in v.views.items()}
    v.set_slice("z", 6)
    changed = {n for n, view in v.views.items() if view.png != before[n][0]}
    assert changed == {"axial"}
    assert {n: view.renders - before[n][1] for n, view in v.views.items()} == {"axial": 1, "coronal": 0, "sagittal": 0}


def test_with_crosshair_other_views_move_only_their_line(viewer):
    coronal_pixels = viewer.views["coronal"].image.get_array().copy()
    before = {n: view.png for n, view in viewer.views.items()}
    viewer.set_slice("axial", viewer.position[0] + 2)
    assert all(view.png != before[n] for n, view in viewer.views.items())
    np.testing.assert_array_equal(viewer.views["coronal"].image.get_array(), coronal_pixels)
    assert viewer.views["coronal"].hline.get_ydata()[0] == viewer.position[0]


def test_patient_selector_window_presets_and_opacity(viewer):
    assert viewer.patient.layout.display == "flex" and len(viewer.patient.options) == 2
    viewer.set_patient(1)
    assert viewer.position == (5, 7, 10)                               # lesion centre of patient 1
    png = viewer.views["axial"].png
    viewer.preset.value = "lung (-1350..150 HU)"
    assert viewer.window.value == pytest.approx((-1350.0, 150.0)) and viewer.views["axial"].png != png
    png = viewer.views["axial"].png
    viewer.opacity.value = 0.0
    assert viewer.views["axial"].png != png
    viewer.preset.value = "percentile 1-99"
    lo, hi = viewer.window.value
    assert lo == pytest.approx(np.percentile(viewer.images[1], 1))


def test_mri_gets_percentile_window_and_static_figure():
    vol = torch.rand(10, 12, 14) * 500 + 100
    v = VolumeViewer(vol, modality="mri")
    assert v.preset.value == "percentile 1-99" and v.opacity.layout.display == "none"
    assert v.patient.layout.display == "none"
    fig = v.figure()
    assert len(fig.axes) == 3 and [a.get_title().split()[0] for a in fig.axes] == ["axial", "coronal", "sagittal"]


def test_viewer_takes_a_phantomset_like_object():
    images, masks = _ct_batch(n=3)
    ph = types.SimpleNamespace(images=images, masks=masks, spacing=(2.0, 1.0, 1.0), modality="ct",
                               labels=torch.tensor([0, 1, 1]), p_true=torch.tensor([0.1, 0.8, 0.6]),
                               sites=torch.tensor([0, 0, 1]))
    v = VolumeViewer(ph)
    assert v.spacing == (2.0, 1.0, 1.0) and v.patient.options[1] == ("patient 1, label 1, p=0.80, site 0", 1)


def test_viewer_takes_an_io_volume():
    vol = types.SimpleNamespace(data=np.zeros((4, 5, 6), np.float32) + np.arange(6), spacing=(5.0, 1.0, 1.0))
    assert VolumeViewer(vol).spacing == (5.0, 1.0, 1.0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(volume="x"), TypeError, "volume: expected a torch.Tensor"),
    (dict(volume=torch.zeros(2, 3, 4, 5, 6)), ValueError, r"volume: expected shape \(D, H, W\)"),
    (dict(volume=torch.full((4, 4, 4), float("nan"))), ValueError, "volume: expected finite"),
    (dict(volume=torch.zeros(4, 4, 4), mask=torch.zeros(4, 4, 5)), ValueError, "mask: expected the volume's shape"),
    (dict(volume=torch.zeros(4, 4, 4), spacing=(1, 0, 1)), ValueError, "spacing: expected three positive"),
    (dict(volume=torch.zeros(4, 4, 4), opacity=2), ValueError, r"opacity: expected a number in \[0, 1\]"),
    (dict(volume=torch.zeros(4, 4, 4), size=0), ValueError, "size: expected the largest view's size"),
])
def test_viewer_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        VolumeViewer(**kwargs)


def test_set_slice_validates(viewer):
    with pytest.raises(ValueError, match="axis: expected one of"):
        viewer.set_slice("oblique", 1)
    with pytest.raises(ValueError, match=r"index: expected an int in \[0, 11\]"):
        viewer.set_slice("z", 12)
    with pytest.raises(ValueError, match="i: expected a patient index"):
        viewer.set_patient(5)


# ---------------------------------------------------------------- Panel

@dataclasses.dataclass
class _Result:
    n: int
    noise: float

    def table(self):
        return pd.DataFrame({"n": [self.n], "noise": [self.noise]})

    def plot(self):
        from matplotlib.figure import Figure
        fig = Figure(figsize=(2, 2))
        fig.subplots().plot(np.arange(self.n) * self.noise)
        return fig


def _experiment(n=10, noise=0.5, model="cnn", augment=False, progress=None):
    calls.append(dict(n=n, noise=noise, model=model, augment=augment))
    for i in range(3):
        if progress:
            progress(i + 1, 3)
    return _Result(n, noise)


calls = []


def test_panel_builds_controls_and_runs_only_on_click():
    calls.clear()
    p = Panel(_experiment, n=(5, 50, 5), noise=(0.0, 1.0), model=["resnet", "cnn"], augment=True)
    kinds = {k: type(w) for k, w in p.controls.items()}
    assert kinds == {"n": W.IntSlider, "noise": W.FloatSlider, "model": W.Dropdown, "augment": W.Checkbox}
    assert p.values == {"n": 10, "noise": 0.5, "model": "cnn", "augment": True}   # the function's defaults
    p.controls["n"].value = 20
    assert calls == [] and p.result is None                                       # no run on change
    p.button.click()
    assert calls == [{"n": 20, "noise": 0.5, "model": "cnn", "augment": True}]
    assert p.progress.value == p.progress.max == 3
    first_png, first_table = bytes(p.plot.value), p.table.value
    assert first_png.startswith(b"\x89PNG") and "<table" in first_table
    p.controls["noise"].value = 0.9
    p.run()
    assert bytes(p.plot.value) != first_png and "0.9" in p.table.value and p.runs == 2


def test_live_panel_runs_on_every_change():
    calls.clear()
    p = Panel(_experiment, live=True, n=(5, 50, 5))
    p.controls["n"].value = 15
    p.controls["n"].value = 25
    assert [c["n"] for c in calls] == [15, 25]


def test_panel_shows_errors_instead_of_losing_them():
    def broken(n=1):
        raise RuntimeError("out of memory")
    p = Panel(broken, n=(1, 4))
    p.run()
    assert isinstance(p.error, RuntimeError) and "out of memory" in p.table.value
    assert p.status.value == "failed: RuntimeError" and not p.button.disabled


def test_panel_accepts_widgets_and_fixed_values():
    slider = W.IntSlider(value=7, min=0, max=9)
    p = Panel(_experiment, n=slider, model=W.fixed("unet"))
    assert p.values == {"n": 7, "model": "unet"}


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(size=(1, 2)), TypeError, "size: not a parameter"),
    (dict(n=(5, 1)), ValueError, r"n: expected a range \(lo, hi\[, step\]\) with lo < hi"),
    (dict(n="ten"), TypeError, "n: expected a"),
    (dict(model=[]), TypeError, "model: expected a"),
])
def test_panel_rejects_bad_controls(kwargs, error, match):
    with pytest.raises(error, match=match):
        Panel(_experiment, **kwargs)
