"""Interactive layer: a 3-view volume viewer and panels that bind experiment functions.

Both use core ipywidgets only (no ipympl, no custom front-end code), so they render
in JupyterLab, classic Notebook, VS Code and Colab alike: each view is a
matplotlib figure drawn off-screen (Agg) into an ``ipywidgets.Image``. A slider
move updates the existing image artists with ``set_data`` and re-encodes only
the views that changed. Without a widget front end, ``viewer.figure()`` and the
plain ``result.plot()`` give the same pictures as static figures.

Taught in ``notebooks/00_welcome.ipynb`` ("Looking at a patient").
"""
from __future__ import annotations

import contextlib
import dataclasses
import html
import inspect
import io
import traceback
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["VolumeViewer", "Panel", "WINDOW_PRESETS"]

# Window presets in physical units (lo, hi). CT in Hounsfield units.
WINDOW_PRESETS = {
    "soft tissue (-100..250 HU)": (-100.0, 250.0),
    "lung (-1350..150 HU)": (-1350.0, 150.0),      # W 1500 / L -600
    "bone (-200..1200 HU)": (-200.0, 1200.0),
}
PERCENTILE = "percentile 1-99"
FULL_RANGE = "full range"

# view name -> (slicing axis of (D, H, W), row axis, column axis)
VIEWS = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}
AXIS_NAMES = {"axial": "axial", "coronal": "coronal", "sagittal": "sagittal", "z": "axial", "y": "coronal",
              "x": "sagittal", 0: "axial", 1: "coronal", 2: "sagittal"}


# ---------------------------------------------------------------- input handling

def _numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a torch.Tensor, numpy array, Volume or PhantomSet, got {type(x).__name__}")
    return x


def _as_batch(x: Any, name: str) -> np.ndarray:
    """``x`` as (N, D, H, W): accepts (D, H, W), (1, D, H, W) and (N, 1, D, H, W)."""
    a = _numpy(x, name)
    if a.ndim == 3:
        a = a[None]
    elif a.ndim == 4 and a.shape[0] == 1:
        pass                                   # (C=1, D, H, W): one volume
    elif a.ndim == 5 and a.shape[1] == 1:
        a = a[:, 0]                            # (N, 1, D, H, W) -> (N, D, H, W)
    else:
        raise ValueError(f"{name}: expected shape (D, H, W), (1, D, H, W) or (N, 1, D, H, W), got {a.shape}")
    if min(a.shape[1:]) < 2:
        raise ValueError(f"{name}: expected at least 2 voxels along each axis, got shape {a.shape[1:]}")
    return a


def _unpack(volume: Any, mask: Any, spacing: Any, modality: str | None):
    """(images (N,D,H,W), masks (N,D,H,W) bool or None, spacing, modality, patient labels)."""
    labels = None
    if hasattr(volume, "images") and hasattr(volume, "spacing"):      # a PhantomSet
        ph = volume
        volume, mask = ph.images, ph.masks if mask is None else mask
        spacing = ph.spacing if spacing is None else spacing
        modality = modality or getattr(ph, "modality", None)
        labels = _patient_labels(ph)
    elif hasattr(volume, "data") and hasattr(volume, "spacing"):      # an rl.io.Volume
        spacing = volume.spacing if spacing is None else spacing
        volume = volume.data
    images = _as_batch(volume, "volume").astype(np.float32, copy=False)
    lo, hi = images.min(), images.max()                # NaN propagates; no volume-sized temporaries
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("volume: expected finite values, got NaN or inf")
    masks = None
    if mask is not None:
        masks = _as_batch(mask, "mask").astype(bool, copy=False)
        if masks.shape != images.shape:
            raise ValueError(f"mask: expected the volume's shape {images.shape}, got {masks.shape}")
    spacing = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing: expected three positive voxel sizes (z, y, x) in mm, got {spacing!r}")
    if modality is None:  # Hounsfield units reach far below zero (air is -1000)
        modality = "ct" if images.min() < -500 else "other"
    return images, masks, spacing, str(modality).lower(), labels


def _patient_labels(ph) -> list[str]:
    n = len(ph.images)
    parts = [[f"patient {i}"] for i in range(n)]
    for attr, fmt in (("labels", "label {}"), ("p_true", "p={:.2f}"), ("sites", "site {}")):
        values = getattr(ph, attr, None)
        if values is not None and len(values) == n:
            for i, v in enumerate(values.tolist()):
                parts[i].append(fmt.format(v))
    return [", ".join(p) for p in parts]


def _lesion_centre(mask: np.ndarray | None, shape) -> list[int]:
    if mask is None or not mask.any():
        return [s // 2 for s in shape]
    return [int(round(c)) for c in np.argwhere(mask).mean(axis=0)]


# ---------------------------------------------------------------- one view

@dataclasses.dataclass
class View:
    """One orthogonal view: its figure, image artists, crosshair lines, widgets and render count."""

    name: str
    figure: Any
    axes: Any
    image: Any          # AxesImage of the grey values
    overlay: Any        # AxesImage of the RGBA mask overlay
    hline: Any
    vline: Any
    widget: Any         # ipywidgets.Image holding the PNG
    slider: Any         # ipywidgets.IntSlider for the slice index
    renders: int = 0

    def render(self) -> None:
        """Encode the figure as PNG into the Image widget."""
        buffer = io.BytesIO()
        self.figure.canvas.print_png(buffer)
        self.widget.value = buffer.getvalue()
        self.renders += 1

    @property
    def png(self) -> bytes:
        return bytes(self.widget.value)


def _mask_rgba(mask2d: np.ndarray, opacity: float) -> np.ndarray:
    rgba = np.zeros((*mask2d.shape, 4), dtype=np.float32)
    rgba[..., 0] = 1.0                                      # red
    rgba[..., 3] = mask2d.astype(np.float32) * opacity
    return rgba


class VolumeViewer:
    """Axial, coronal and sagittal views of a volume, with sliders, window presets and a mask overlay.

    ``volume``: a (D, H, W) / (1, D, H, W) / (N, 1, D, H, W) tensor or array, an
    ``rl.io.Volume`` or a PhantomSet (images, masks and spacing are taken from it).
    ``spacing`` is (z, y, x) in mm and sets each view's aspect ratio. Display the
    viewer (last expression of a cell) or ``viewer.widget``; ``viewer.figure()``
    gives a static matplotlib figure of the same slices.
    """

    def __init__(self, volume, mask=None, spacing=None, *, modality: str | None = None,
                 crosshair: bool = True, size: float = 3.0, opacity: float = 0.4):
        import ipywidgets as W
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure  # no pyplot: nothing leaks into the inline backend

        if not (isinstance(size, (int, float)) and 0.5 <= size <= 20):
            raise ValueError(f"size: expected the largest view's size in inches, in [0.5, 20], got {size!r}")
        if not (isinstance(opacity, (int, float)) and 0 <= opacity <= 1):
            raise ValueError(f"opacity: expected a number in [0, 1], got {opacity!r}")
        self.images, self.masks, self.spacing, self.modality, labels = _unpack(volume, mask, spacing, modality)
        self.crosshair, self._hold = bool(crosshair), False
        shape = self.images.shape[1:]
        self._make_controls(W, labels, opacity)
        extent = {v: (shape[r] * self.spacing[r], shape[c] * self.spacing[c]) for v, (_, r, c) in VIEWS.items()}
        inch_per_mm = size / max(max(e) for e in extent.values())  # one mm scale for all three views
        self.views = {name: self._make_view(W, Figure, FigureCanvasAgg, name, extent[name], inch_per_mm)
                      for name in VIEWS}
        for name, view in self.views.items():
            view.slider.observe(lambda change, name=name: self._on_slice(name), names="value")
        self.patient.observe(lambda change: self._on_patient(), names="value")
        self.preset.observe(lambda change: self._apply_preset(), names="value")
        self.window.observe(lambda change: self._redraw(self.views), names="value")
        self.opacity.observe(lambda change: self._redraw(self.views), names="value")
        self._on_patient()
        self.widget = W.VBox([W.HBox([self.patient, self.preset, self.window]),
                              W.HBox([W.VBox([v.widget, v.slider]).add_class(f"radlab-view-{v.name}")
                                      for v in self.views.values()]),
                              self.opacity]).add_class("radlab-viewer")  # CSS hooks for the browser test

    def _make_controls(self, W, labels, opacity) -> None:
        """Patient menu (batches only), window preset menu and range, mask opacity (with a mask only)."""
        n = len(self.images)
        options = [(lab, i) for i, lab in enumerate(labels or [f"patient {i}" for i in range(n)])]
        self.patient = W.Dropdown(options=options, value=0, description="patient",
                                  layout=W.Layout(display="flex" if n > 1 else "none", width="27em"))
        presets = ([*WINDOW_PRESETS] if self.modality == "ct" else []) + [PERCENTILE, FULL_RANGE]
        self.preset = W.Dropdown(options=presets, value=presets[0], description="window")
        lo, hi = float(self.images.min()), float(self.images.max())
        if self.modality == "ct":  # room for every preset, whatever this scan contains
            lo = min(lo, *(w[0] for w in WINDOW_PRESETS.values()))
            hi = max(hi, *(w[1] for w in WINDOW_PRESETS.values()))
        self.window = W.FloatRangeSlider(value=(lo, hi), min=lo, max=hi, step=(hi - lo) / 500 or 1.0,
                                         description="lo..hi", readout_format=".4g", continuous_update=False,
                                         layout=W.Layout(width="30em"))
        has_mask = self.masks is not None
        self.opacity = W.FloatSlider(value=opacity if has_mask else 0.0, min=0, max=1, step=0.05, description="mask",
                                     layout=W.Layout(display="flex" if has_mask else "none"))

    def _make_view(self, W, Figure, FigureCanvasAgg, name, extent_mm, inch_per_mm) -> View:
        axis, rows, cols = VIEWS[name]
        height, width = (e * inch_per_mm for e in extent_mm)
        fig = Figure(figsize=(max(width, 0.6), height + 0.25), dpi=100, facecolor="black")
        FigureCanvasAgg(fig)  # off-screen canvas: PNG bytes without any GUI or inline backend
        ax = fig.add_axes((0, 0, 1, height / (height + 0.25)))
        ax.set_axis_off()
        shape = self.images.shape[1:]
        blank = np.zeros((shape[rows], shape[cols]), dtype=np.float32)
        origin = "upper" if name == "axial" else "lower"       # head up in coronal and sagittal views
        aspect = self.spacing[rows] / self.spacing[cols]       # mm per row over mm per column
        image = ax.imshow(blank, cmap="gray", aspect=aspect, origin=origin, interpolation="nearest")
        overlay = ax.imshow(_mask_rgba(blank > 0, 0.0), aspect=aspect, origin=origin, interpolation="nearest")
        style = dict(color="yellow", lw=0.8, alpha=0.7, visible=self.crosshair)
        hline, vline = ax.axhline(0, **style), ax.axvline(0, **style)
        ax.set_title(name, color="white", fontsize=9, pad=2)
        slider = W.IntSlider(value=shape[axis] // 2, min=0, max=shape[axis] - 1, description="zyx"[axis],
                             continuous_update=True, style={"description_width": "1.2em"},
                             layout=W.Layout(width=f"{max(width * 100, 170):.0f}px"))
        return View(name, fig, ax, image, overlay, hline, vline,
                    W.Image(format="png"), slider)

    # -- programmatic API
    def set_slice(self, axis, index: int) -> None:
        """Move view ``axis`` ("axial"/"coronal"/"sagittal", "z"/"y"/"x" or 0/1/2) to slice ``index``."""
        if axis not in AXIS_NAMES:
            raise ValueError(f"axis: expected one of {sorted(map(str, AXIS_NAMES))}, got {axis!r}")
        slider = self.views[AXIS_NAMES[axis]].slider
        if not (isinstance(index, (int, np.integer)) and slider.min <= index <= slider.max):
            raise ValueError(f"index: expected an int in [0, {slider.max}] for the {AXIS_NAMES[axis]} view, "
                             f"got {index!r}")
        slider.value = int(index)

    @property
    def position(self) -> tuple[int, int, int]:
        """The crosshair position (z, y, x) in voxels."""
        return tuple(self.views[name].slider.value for name in VIEWS)

    def set_patient(self, i: int) -> None:
        if not (isinstance(i, (int, np.integer)) and 0 <= i < len(self.images)):
            raise ValueError(f"i: expected a patient index in [0, {len(self.images) - 1}], got {i!r}")
        self.patient.value = int(i)

    # -- reacting to controls
    def _on_slice(self, name: str) -> None:
        if self._hold:
            return
        # The moved view gets new pixels; the others only move their crosshair.
        self._redraw([name] + ([v for v in VIEWS if v != name] if self.crosshair else []))

    def _on_patient(self) -> None:
        i = self.patient.value
        with self._holding():
            for name, index in zip(VIEWS, _lesion_centre(None if self.masks is None else self.masks[i],
                                                         self.images.shape[1:])):
                self.views[name].slider.value = index
            self._apply_preset()
        self._redraw(self.views)

    def _apply_preset(self) -> None:
        vol = self.images[self.patient.value]
        name = self.preset.value
        if name in WINDOW_PRESETS:
            lo, hi = WINDOW_PRESETS[name]
        elif name == PERCENTILE:
            lo, hi = (float(v) for v in np.percentile(vol, [1, 99]))
        else:
            lo, hi = float(vol.min()), float(vol.max())
        lo, hi = max(lo, self.window.min), min(hi, self.window.max)
        self.window.value = (lo, hi if hi > lo else lo + 1e-6)

    @contextlib.contextmanager
    def _holding(self):
        held, self._hold = self._hold, True
        try:
            yield
        finally:
            self._hold = held

    def _slices(self, name: str):
        axis, _, _ = VIEWS[name]
        i = self.patient.value
        index = self.views[name].slider.value
        image = np.take(self.images[i], index, axis=axis)
        mask = None if self.masks is None else np.take(self.masks[i], index, axis=axis)
        return image, mask

    def _update_artists(self, name: str) -> None:
        view = self.views[name]
        image, mask = self._slices(name)
        view.image.set_data(image)
        view.image.set_clim(*self.window.value)
        if mask is not None:
            view.overlay.set_data(_mask_rgba(mask, self.opacity.value))
        _, rows, cols = VIEWS[name]
        position = self.position
        view.hline.set_ydata([position[rows]] * 2)
        view.vline.set_xdata([position[cols]] * 2)
        view.axes.set_title(f"{name} {'zyx'[VIEWS[name][0]]}={view.slider.value}", color="white", fontsize=9, pad=2)

    def _redraw(self, names) -> None:
        if self._hold:
            return
        for name in names:
            self._update_artists(name)
            self.views[name].render()

    # -- display
    def figure(self):
        """A static matplotlib Figure of the three current slices (no widgets needed)."""
        import matplotlib.pyplot as plt

        widths = [self.views[n].figure.get_figwidth() for n in VIEWS]
        height = max(self.views[n].figure.get_figheight() for n in VIEWS)
        fig = plt.figure(figsize=(sum(widths) + 0.4, height), facecolor="black")
        plt.close(fig)  # returned, not auto-shown: a notebook displays it once
        axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": widths})
        for ax, name in zip(axes, VIEWS):
            view, (image, mask) = self.views[name], self._slices(name)
            kw = dict(aspect=view.axes.get_aspect(), origin=view.image.origin, interpolation="nearest")
            ax.imshow(image, cmap="gray", vmin=self.window.value[0], vmax=self.window.value[1], **kw)
            if mask is not None and self.opacity.value > 0:
                ax.imshow(_mask_rgba(mask, self.opacity.value), **kw)
            if self.crosshair:
                ax.axhline(view.hline.get_ydata()[0], color="yellow", lw=0.8, alpha=0.7)
                ax.axvline(view.vline.get_xdata()[0], color="yellow", lw=0.8, alpha=0.7)
            ax.set_title(view.axes.get_title(), color="white", fontsize=9)
            ax.set_axis_off()
        return fig

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)

    def __repr__(self) -> str:
        n, d, h, w = self.images.shape
        return (f"VolumeViewer({n} volume(s) of {d}x{h}x{w} voxels, spacing {self.spacing} mm, "
                f"modality {self.modality}, position {self.position})")


# ---------------------------------------------------------------- experiment panels

def _control(name: str, spec: Any, default: Any):
    import ipywidgets as W

    if isinstance(spec, (W.ValueWidget, W.fixed)):
        return spec
    if isinstance(spec, bool):
        return W.Checkbox(value=spec, description=name)
    if isinstance(spec, tuple) and len(spec) in (2, 3) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             for v in spec):
        lo, hi = spec[:2]
        if not lo < hi:
            raise ValueError(f"{name}: expected a range (lo, hi[, step]) with lo < hi, got {spec!r}")
        is_int = all(isinstance(v, int) for v in spec)
        step = spec[2] if len(spec) == 3 else (1 if is_int else (hi - lo) / 100)
        value = default if isinstance(default, (int, float)) and lo <= default <= hi else lo
        slider = W.IntSlider if is_int else W.FloatSlider
        return slider(value=value, min=lo, max=hi, step=step, description=name, continuous_update=False,
                      style={"description_width": "initial"})
    if isinstance(spec, list) and spec:
        return W.Dropdown(options=spec, value=default if default in spec else spec[0], description=name,
                          style={"description_width": "initial"})
    raise TypeError(f"{name}: expected a (lo, hi[, step]) range, a non-empty list, a bool, ipywidgets.fixed "
                    f"or a widget, got {spec!r:.60}")


class Panel:
    """Controls for ``experiment_fn``'s arguments, a Run button, progress, and the result below.

    ``Panel(fn, n=(50, 800, 50), modality=["ct", "mri"], augment=True)`` makes a
    slider, a dropdown and a checkbox. Changing a control never runs the experiment;
    only Run does, unless ``live=True`` (for cheap arithmetic, e.g. cost estimates).
    If ``fn`` accepts ``progress``, it is given a callback ``progress(done, total)``.
    The result's ``.plot()`` figure and ``.table()`` DataFrame are shown below.
    """

    def __init__(self, experiment_fn: Callable, *, live: bool = False, **controls):
        import ipywidgets as W

        if not callable(experiment_fn):
            raise TypeError(f"experiment_fn: expected a function, got {type(experiment_fn).__name__}")
        params = inspect.signature(experiment_fn).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for name in controls:
            if name not in params and not takes_any:
                raise TypeError(f"{name}: not a parameter of {experiment_fn.__name__}{inspect.signature(experiment_fn)}")
        defaults = {k: p.default for k, p in params.items()}
        self.fn, self.live = experiment_fn, live
        self.controls = {k: _control(k, v, defaults.get(k)) for k, v in controls.items()}
        self._takes_progress = "progress" in params
        self.button = W.Button(description="Run", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="", layout=W.Layout(width="20em"))
        self.status = W.Label("")
        self.plot, self.table = W.Image(format="png"), W.HTML()
        self.log = W.Output()               # prints and tqdm bars of the experiment go here
        self.result, self.error, self.runs = None, None, 0
        self.button.on_click(lambda _: self.run())
        if live:
            for widget in self.controls.values():
                if isinstance(widget, W.ValueWidget):
                    widget.observe(lambda change: self.run(), names="value")
        shown = [w for w in self.controls.values() if isinstance(w, W.Widget)]
        self.widget = W.VBox([W.VBox(shown), W.HBox([self.button, self.progress, self.status]),
                              self.log, self.plot, self.table])

    @property
    def values(self) -> dict[str, Any]:
        """The arguments the next run will get."""
        return {k: w.value for k, w in self.controls.items()}

    def _report_progress(self, done: int, total: int | None = None) -> None:
        if total:
            self.progress.max = max(int(total), 1)
        self.progress.value = min(int(done), self.progress.max)

    def run(self):
        """Call the experiment with the current control values and show its result; returns it."""
        kwargs = self.values
        if self._takes_progress:
            kwargs["progress"] = self._report_progress
        self.button.disabled, self.status.value, self.progress.value = True, "running…", 0
        try:
            with self.log:
                self.result = self.fn(**kwargs)
            self.error = None
            self._show(self.result)
            self.status.value = f"done (run {self.runs + 1})"
        except Exception as err:  # shown in the panel: a callback's exception would vanish into the log
            self.error = err
            self.table.value = f"<pre>{html.escape(traceback.format_exc())}</pre>"
            self.status.value = f"failed: {type(err).__name__}"
        finally:
            self.button.disabled = False
            self.runs += 1
        self.progress.value = self.progress.max
        return self.result

    def _show(self, result) -> None:
        if hasattr(result, "plot"):
            fig = result.plot()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
            self.plot.value = buffer.getvalue()
            _close(fig)
        table = result.table() if hasattr(result, "table") else None
        self.table.value = table.to_html(float_format=lambda v: f"{v:.4g}") if table is not None \
            else f"<pre>{html.escape(repr(result))}</pre>"

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)


def _close(fig) -> None:
    # A pyplot figure made in a callback would otherwise pop up under the next cell.
    import matplotlib.pyplot as plt
    if plt.fignum_exists(getattr(fig, "number", -1)):
        plt.close(fig)
