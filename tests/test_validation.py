"""Bad input, table-driven: every public function of the foundation (issue 3) refuses it
with a ValueError / TypeError / FileNotFoundError whose message names the argument.

Each row is (function call, expected exception, argument name the message must mention).
Rows of a module that does not exist yet are skipped, so the table tightens on its own.
"""
import importlib
import importlib.util
import re
import types

import numpy as np
import pytest
import torch

NAN, INF = float("nan"), float("inf")
ANY_TYPE = (TypeError, ValueError)          # a wrong type may be reported as either


def _module(name: str):
    """Import radlab.<name>, or skip the row if the module has not been written yet."""
    if importlib.util.find_spec(f"radlab.{name}") is None:
        pytest.skip(f"radlab.{name} does not exist yet")
    return importlib.import_module(f"radlab.{name}")


@pytest.fixture(scope="module")
def f(tmp_path_factory):
    """Files and values the rows refer to: a valid NIfTI file, a folder of images, an npz."""
    from radlab.io import Volume, save_nifti

    root = tmp_path_factory.mktemp("validation")
    (root / "images").mkdir()
    save_nifti(Volume(np.zeros((4, 4, 4), np.float32), (1, 1, 1)), root / "images" / "a.nii.gz")
    return types.SimpleNamespace(root=root, nifti=root / "images" / "a.nii.gz",
                                 volume=Volume(np.zeros((4, 4, 4), np.float32), (1, 1, 1)),
                                 x=torch.zeros(2, 1, 4, 4, 4))


def _nan_at_0(shape=(2, 1, 4, 4, 4), value=NAN):
    x = torch.zeros(shape)
    x.view(-1)[0] = value
    return x


def _ph(**kw):
    return _module("phantoms").make_phantoms(kw.pop("n", 4), size=kw.pop("size", 16), **kw)


ROWS = {
    # ---- profile: setup / claim ---------------------------------------------------------------
    "setup seed<0":            (lambda f: _module("profile").setup(seed=-1, quiet=True), ValueError, "seed"),
    "setup profile unknown":   (lambda f: _module("profile").setup(profile="fast", quiet=True), ValueError, "profile"),
    "make_profile unknown":    (lambda f: _module("profile").make_profile("turbo"), ValueError, "name"),
    "claim empty text":        (lambda f: _module("profile").claim(True, ""), TypeError, "text"),
    "claim text not str":      (lambda f: _module("profile").claim(True, 3), TypeError, "text"),
    "claim many values":       (lambda f: _module("profile").claim(torch.tensor([True, False]), "t"),
                                ValueError, "condition"),
    "claim many values numpy": (lambda f: _module("profile").claim(np.array([1, 0]), "t"), ValueError, "condition"),
    # ---- phantoms ------------------------------------------------------------------------------
    "make_phantoms n=0":            (lambda f: _ph(n=0), ValueError, "n"),
    "make_phantoms n float":        (lambda f: _ph(n=2.5), ANY_TYPE, "n"),
    "make_phantoms size<8":         (lambda f: _ph(size=4), ValueError, "size"),
    "make_phantoms modality":       (lambda f: _ph(modality="xray"), ValueError, "modality"),
    "make_phantoms task":           (lambda f: _ph(task="regression"), ValueError, "task"),
    "make_phantoms sites=0":        (lambda f: _ph(sites=0), ValueError, "sites"),
    "make_phantoms confounding>1":  (lambda f: _ph(confounding=1.5), ValueError, "confounding"),
    "make_phantoms confounding<0":  (lambda f: _ph(confounding=-0.1), ValueError, "confounding"),
    "make_phantoms confounding nan": (lambda f: _ph(confounding=NAN), ValueError, "confounding"),
    "make_phantoms spacing 2 axes": (lambda f: _ph(spacing=(1.0, 1.0)), ValueError, "spacing"),
    "make_phantoms spacing <=0":    (lambda f: _ph(spacing=(0.0, 1.0, 1.0)), ValueError, "spacing"),
    "make_phantoms spacing inf":    (lambda f: _ph(spacing=(INF, 1.0, 1.0)), ValueError, "spacing"),
    "make_phantoms seed<0":         (lambda f: _ph(seed=-3), ValueError, "seed"),
    "make_phantoms pattern_share":  (lambda f: _ph(pattern_share=1.5), ValueError, "pattern_share"),
    "make_phantoms censoring":      (lambda f: _ph(task="survival", censoring=1.0), ValueError, "censoring"),
    "make_phantoms lesion_fraction": (lambda f: _ph(task="segmentation", lesion_fraction=1.5),
                                 ValueError, "lesion_fraction"),
    "PhantomDataset n=0":      (lambda f: _module("phantoms").PhantomDataset(0, size=16), ValueError, "n"),
    # ---- io --------------------------------------------------------------------------------------
    "Volume data list":        (lambda f: _module("io").Volume([[[0.0]]], (1, 1, 1)), TypeError, "data"),
    "Volume data 2-D":         (lambda f: _module("io").Volume(np.zeros((3, 3)), (1, 1, 1)), ValueError, "data"),
    "Volume spacing 2 axes":   (lambda f: _module("io").Volume(np.zeros((2, 2, 2)), (1, 1)), ValueError, "spacing"),
    "Volume spacing <0":       (lambda f: _module("io").Volume(np.zeros((2, 2, 2)), (1, -1, 1)), ValueError, "spacing"),
    "Volume spacing nan":      (lambda f: _module("io").Volume(np.zeros((2, 2, 2)), (1, NAN, 1)), ValueError, "spacing"),
    "Volume spacing str":      (lambda f: _module("io").Volume(np.zeros((2, 2, 2)), "1mm"), ValueError, "spacing"),
    "Volume spacing words":    (lambda f: _module("io").Volume(np.zeros((2, 2, 2)), ("a", 1, 1)), TypeError, "spacing"),
    "Volume affine 3x3":       (lambda f: _module("io").Volume(np.zeros((2, 2, 2)), (1, 1, 1), np.eye(3)),
                                ValueError, "affine"),
    "Volume affine nan":       (lambda f: _module("io").Volume(np.zeros((2, 2, 2)), (1, 1, 1), np.full((4, 4), NAN)),
                                ValueError, "affine"),
    "check_spacing 4 axes":    (lambda f: _module("io").check_spacing((1, 1, 1, 1)), ValueError, "spacing"),
    "check_spacing named":     (lambda f: _module("io").check_spacing((1, 0, 1), "voxel_mm"), ValueError, "voxel_mm"),
    "load_nifti path int":           (lambda f: _module("io").load_nifti(3), TypeError, "path"),
    "load_nifti path suffix":        (lambda f: _module("io").load_nifti(f.root / "a.png"), ValueError, "path"),
    "load_nifti missing":            (lambda f: _module("io").load_nifti(f.root / "missing.nii.gz"), FileNotFoundError, "path"),
    "save_nifti not a Volume":       (lambda f: _module("io").save_nifti(np.zeros((2, 2, 2)), f.root / "s.nii"),
                                TypeError, "volume"),
    "save_nifti float16":            (lambda f: _module("io").save_nifti(_module("io").Volume(
                                    np.zeros((2, 2, 2), np.float16), (1, 1, 1)), f.root / "h.nii"), TypeError, "volume"),
    "save_nifti path suffix":        (lambda f: _module("io").save_nifti(f.volume, f.root / "s.nrrd"), ValueError, "path"),
    "save_nifti folder missing":     (lambda f: _module("io").save_nifti(f.volume, f.root / "no" / "s.nii"),
                                FileNotFoundError, "path"),
    "save_nifti exists":             (lambda f: _module("io").save_nifti(f.volume, f.nifti), FileExistsError, "path"),
    # ---- preprocess ------------------------------------------------------------------------------
    "ct_window x list":        (lambda f: _module("preprocess").ct_window([0.0, 1.0]), TypeError, "x"),
    "ct_window x bool":        (lambda f: _module("preprocess").ct_window(torch.zeros(3, dtype=torch.bool)),
                                TypeError, "x"),
    "ct_window x nan":         (lambda f: _module("preprocess").ct_window(_nan_at_0()), ValueError, "x"),
    "ct_window x inf":         (lambda f: _module("preprocess").ct_window(_nan_at_0(value=INF)), ValueError, "x"),
    "ct_window x empty":       (lambda f: _module("preprocess").ct_window(torch.zeros(0)), ValueError, "x"),
    "ct_window lo>=hi":        (lambda f: _module("preprocess").ct_window(f.x, lo=100, hi=100), ValueError, "lo"),
    "ct_window lo nan":        (lambda f: _module("preprocess").ct_window(f.x, lo=NAN), ValueError, "lo"),
    "ct_window hi str":        (lambda f: _module("preprocess").ct_window(f.x, hi="250"), TypeError, "hi"),
    "zscore x nan":            (lambda f: _module("preprocess").zscore(_nan_at_0()), ValueError, "x"),
    "zscore x numpy object":   (lambda f: _module("preprocess").zscore(np.array(["a"], dtype=object)), ANY_TYPE, "x"),
    "zscore mask float":       (lambda f: _module("preprocess").zscore(f.x, torch.ones_like(f.x)), TypeError, "mask"),
    "zscore mask shape":       (lambda f: _module("preprocess").zscore(f.x, torch.ones(2, 1, 4, 4, dtype=torch.bool)),
                                ValueError, "mask"),
    "zscore mask list":        (lambda f: _module("preprocess").zscore(f.x, [True]), TypeError, "mask"),
    "zscore mask empty":       (lambda f: _module("preprocess").zscore(f.x, torch.zeros_like(f.x, dtype=torch.bool)),
                                ValueError, "mask"),
    "suv x inf":               (lambda f: _module("preprocess").suv(_nan_at_0(value=INF), weight_kg=70,
                                                                    injected_dose_bq=3e8), ValueError, "x"),
    "suv weight 0":            (lambda f: _module("preprocess").suv(f.x, weight_kg=0, injected_dose_bq=3e8),
                                ValueError, "weight_kg"),
    "suv weight nan":          (lambda f: _module("preprocess").suv(f.x, weight_kg=NAN, injected_dose_bq=3e8),
                                ValueError, "weight_kg"),
    "suv weight str":          (lambda f: _module("preprocess").suv(f.x, weight_kg="70", injected_dose_bq=3e8),
                                TypeError, "weight_kg"),
    "suv weight per sample<0": (lambda f: _module("preprocess").suv(f.x, weight_kg=torch.tensor([70.0, -1.0]),
                                                                    injected_dose_bq=3e8), ValueError, "weight_kg"),
    "suv dose shape":          (lambda f: _module("preprocess").suv(f.x, weight_kg=70, injected_dose_bq=torch.ones(3)),
                                ValueError, "injected_dose_bq"),
    "suv dose inf":            (lambda f: _module("preprocess").suv(f.x, weight_kg=70, injected_dose_bq=INF),
                                ValueError, "injected_dose_bq"),
    "random_flips 4-D":        (lambda f: _module("augment").random_flips(torch.zeros(1, 4, 4, 4)), ValueError, "x"),
    "crop_around numpy":       (lambda f: _module("preprocess").crop_around(np.zeros((1, 1, 4, 4, 4)), torch.ones(1, 1, 4, 4, 4), 2),
                                TypeError, "x, mask"),
    "crop_around mask shape":  (lambda f: _module("preprocess").crop_around(torch.zeros(1, 1, 4, 4, 4), torch.ones(1, 1, 4, 4), 2),
                                ValueError, "mask"),
    "crop_around edge big":    (lambda f: _module("preprocess").crop_around(torch.zeros(1, 1, 4, 4, 4), torch.ones(1, 1, 4, 4, 4), 9),
                                ValueError, "edge"),
    "crop_around empty mask":  (lambda f: _module("preprocess").crop_around(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4), 2),
                                ValueError, "mask"),
    "resample volume list":    (lambda f: _module("preprocess").resample([1.0], (1, 1, 1), from_spacing=(1, 1, 1)),
                                TypeError, "volume"),
    "resample volume 2-D":     (lambda f: _module("preprocess").resample(torch.zeros(4, 4), (1, 1, 1),
                                                                         from_spacing=(1, 1, 1)), ValueError, "volume"),
    "resample volume nan":     (lambda f: _module("preprocess").resample(_nan_at_0(), (1, 1, 1), from_spacing=(2, 2, 2)),
                                ValueError, "volume"),
    "resample ints trilinear": (lambda f: _module("preprocess").resample(torch.zeros(4, 4, 4, dtype=torch.long),
                                                                         (1, 1, 1), from_spacing=(2, 2, 2)),
                                TypeError, "volume"),
    "resample spacing 2 axes": (lambda f: _module("preprocess").resample(f.volume, (1, 1)), ValueError, "spacing"),
    "resample spacing 0":      (lambda f: _module("preprocess").resample(f.volume, (0, 1, 1)), ValueError, "spacing"),
    "resample order 3":        (lambda f: _module("preprocess").resample(f.volume, (1, 1, 1), order=3),
                                ValueError, "order"),
    "resample no from_spacing": (lambda f: _module("preprocess").resample(f.x, (1, 1, 1)), ValueError, "from_spacing"),
    "resample from_spacing<0": (lambda f: _module("preprocess").resample(f.x, (1, 1, 1), from_spacing=(1, -1, 1)),
                                ValueError, "from_spacing"),
    "resample Volume+from_spacing": (lambda f: _module("preprocess").resample(f.volume, (1, 1, 1),
                                                                              from_spacing=(1, 1, 1)),
                                     ValueError, "from_spacing"),
    # ---- datasets --------------------------------------------------------------------------------
    "NiftiFolder task":        (lambda f: _module("datasets").NiftiFolder(f.root, task="regression"), ValueError, "task"),
    "NiftiFolder root None":   (lambda f: _module("datasets").NiftiFolder(None), TypeError, "root"),
    "NiftiFolder root":        (lambda f: _module("datasets").NiftiFolder(f.root / "none"), FileNotFoundError, "root"),
    "NiftiFolder images":      (lambda f: _module("datasets").NiftiFolder(f.root, images="scans"),
                                FileNotFoundError, "images"),
    "NiftiFolder labels":      (lambda f: _module("datasets").NiftiFolder(f.root), FileNotFoundError, "labels"),
    "NiftiFolder masks":       (lambda f: _module("datasets").NiftiFolder(f.root, task="segmentation"),
                                FileNotFoundError, "masks"),
    "NiftiFolder preprocess":  (lambda f: _module("datasets").NiftiFolder(f.root, preprocess="ct"), TypeError,
                                "preprocess"),
    "NiftiFolder transform":   (lambda f: _module("datasets").NiftiFolder(f.root, transform=3), TypeError, "transform"),
    "MedMNIST3D split":        (lambda f: _module("datasets").MedMNIST3D(f.root / "x.npz", split="dev"),
                                ValueError, "split"),
    "MedMNIST3D path type":    (lambda f: _module("datasets").MedMNIST3D(3), TypeError, "npz_path"),
    "MedMNIST3D missing":      (lambda f: _module("datasets").MedMNIST3D(f.root / "x.npz"), FileNotFoundError,
                                "npz_path"),
    "MedMNIST3D transform":    (lambda f: _module("datasets").MedMNIST3D(f.root / "x.npz", transform="flip"),
                                TypeError, "transform"),
}


@pytest.mark.parametrize("call, error, argument", ROWS.values(), ids=ROWS.keys())
def test_bad_input_is_refused_naming_the_argument(f, call, error, argument):
    with pytest.raises(error) as info:
        call(f)
    assert re.search(rf"\b{argument}\b", str(info.value)), \
        f"the message should name {argument!r}: {info.value}"


def test_every_public_function_of_the_foundation_has_a_row():
    """Adding a public function to these modules without a bad-input row fails here."""
    covered = {row.split()[0] for row in ROWS}                       # rows start with the function name
    for name in ("profile", "io", "preprocess", "datasets", "phantoms", "augment"):
        if importlib.util.find_spec(f"radlab.{name}") is None:
            continue
        module = importlib.import_module(f"radlab.{name}")
        public = getattr(module, "__all__", None) or {"profile": ["setup", "claim", "make_profile"]}.get(name, [])
        for function in public:
            if callable(getattr(module, function)) and not isinstance(getattr(module, function), type(Exception)):
                assert function in covered, f"radlab.{name}.{function} has no bad-input row in test_validation.py"
