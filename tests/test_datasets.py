"""radlab.datasets: NiftiFolder and MedMNIST3D on small files each test writes itself."""
import numpy as np
import pandas as pd
import pytest
import torch

from radlab.datasets import MedMNIST3D, NiftiFolder
from radlab.io import Volume, save_nifti
from radlab.preprocess import ct_window

IDS = ["case_002", "case_000", "case_001"]


def _write_folder(root, ids=IDS, masks=True, csv=True, shape=(4, 5, 6)):
    """root/images/<id>.nii.gz (value = index * 100 HU), root/masks/<id>.nii.gz, root/labels.csv."""
    (root / "images").mkdir(parents=True)
    if masks:
        (root / "masks").mkdir()
    for k, case in enumerate(ids):
        image = np.full(shape, k * 100 - 100, np.int16)
        save_nifti(Volume(image, (3.0, 1.0, 1.0)), root / "images" / f"{case}.nii.gz")
        if masks:
            mask = np.zeros(shape, bool)
            mask[: k + 1] = True                      # k + 1 slices of lesion
            save_nifti(Volume(mask, (3.0, 1.0, 1.0)), root / "masks" / f"{case}.nii.gz")
    if csv:
        pd.DataFrame({"id": ids, "label": [k % 2 for k in range(len(ids))],
                      "time": [10.0 * (k + 1) for k in range(len(ids))],
                      "event": [1, 0, 1][: len(ids)]}).to_csv(root / "labels.csv", index=False)
    return root


def test_classification_items(tmp_path):
    data = NiftiFolder(_write_folder(tmp_path))
    assert len(data) == 3 and data.ids == sorted(IDS)
    x, y = data[data.ids.index("case_001")]             # written third (k = 2): 100 HU, label 0
    assert x.shape == (1, 4, 5, 6) and x.dtype == torch.float32
    assert torch.all(x == 100) and y.dtype == torch.float32 and y.item() == 0.0
    assert data[data.ids.index("case_000")][1].item() == 1.0      # k = 1
    assert data.volume(0).spacing == (3.0, 1.0, 1.0)


def test_preprocess_and_transform_are_applied(tmp_path):
    data = NiftiFolder(_write_folder(tmp_path), preprocess=ct_window,
                       transform=lambda x, y: (x.flip(-1), y + 10))
    x, y = data[data.ids.index("case_000")]                       # 0 HU
    assert torch.allclose(x, torch.full_like(x, 100 / 350)) and y.item() == 11.0


def test_segmentation_items_are_float_masks(tmp_path):
    data = NiftiFolder(_write_folder(tmp_path, csv=False), task="segmentation")
    x, y = data[data.ids.index("case_001")]                       # k = 2: three lesion slices
    assert y.shape == x.shape == (1, 4, 5, 6) and y.dtype == torch.float32
    assert y.sum().item() == 3 * 5 * 6 and y[0, 3].sum() == 0


def test_survival_items_are_time_and_event(tmp_path):
    data = NiftiFolder(_write_folder(tmp_path), task="survival")
    _, y = data[data.ids.index("case_002")]                        # k = 0
    assert torch.equal(y, torch.tensor([10.0, 1.0]))
    assert data.targets.shape == (3, 2)


def test_works_with_a_dataloader(tmp_path):
    loader = torch.utils.data.DataLoader(NiftiFolder(_write_folder(tmp_path)), batch_size=2)
    x, y = next(iter(loader))
    assert x.shape == (2, 1, 4, 5, 6) and y.shape == (2,)


def test_csv_ids_without_images(tmp_path):
    _write_folder(tmp_path)
    table = pd.read_csv(tmp_path / "labels.csv")
    pd.concat([table, table.iloc[:1].assign(id="ghost")]).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match="labels: ids .* without an image: ghost"):
        NiftiFolder(tmp_path)


def test_images_without_csv_rows(tmp_path):
    _write_folder(tmp_path)
    pd.read_csv(tmp_path / "labels.csv").iloc[1:].to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match="labels: images without a row .*case_002"):
        NiftiFolder(tmp_path)


def test_image_without_mask(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "masks" / "case_001.nii.gz").unlink()
    with pytest.raises(ValueError, match="masks: no mask for images case_001"):
        NiftiFolder(tmp_path, task="segmentation")


@pytest.mark.parametrize("task, column", [("classification", "label"), ("survival", "time")])
def test_missing_columns_are_named(tmp_path, task, column):
    _write_folder(tmp_path)
    pd.read_csv(tmp_path / "labels.csv").drop(columns=column).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=f"{column}_column: no column '{column}'"):
        NiftiFolder(tmp_path, task=task)


def test_bad_survival_values(tmp_path):
    _write_folder(tmp_path)
    table = pd.read_csv(tmp_path / "labels.csv")
    table.assign(event=[1, 2, 0]).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match="event_column: expected 0 .* or 1"):
        NiftiFolder(tmp_path, task="survival")
    table.assign(time=[1.0, -3.0, 2.0]).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match="time_column: expected positive"):
        NiftiFolder(tmp_path, task="survival")


def test_missing_label_value(tmp_path):
    _write_folder(tmp_path)
    pd.read_csv(tmp_path / "labels.csv").assign(label=[1, None, 0]).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match="label_column: .*missing"):
        NiftiFolder(tmp_path)


def test_missing_folders_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        NiftiFolder(tmp_path / "nowhere")
    _write_folder(tmp_path, masks=False, csv=False)
    with pytest.raises(FileNotFoundError, match="labels: .*needs a CSV"):
        NiftiFolder(tmp_path)
    with pytest.raises(FileNotFoundError, match="masks: task='segmentation' needs a mask folder"):
        NiftiFolder(tmp_path, task="segmentation")
    with pytest.raises(FileNotFoundError, match="images: no folder"):
        NiftiFolder(tmp_path, images="scans", task="segmentation")


# --------------------------------------------------------------------------- MedMNIST 3D
def _write_npz(path, n=(5, 2, 3), size=28, multilabel=False):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, size, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (count, 3 if multilabel else 1))
    np.savez_compressed(path, **arrays)
    return arrays


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_medmnist_items(tmp_path, split):
    arrays = _write_npz(tmp_path / "nodulemnist3d.npz")
    data = MedMNIST3D(tmp_path / "nodulemnist3d.npz", split=split)
    assert len(data) == len(arrays[f"{split}_images"])
    x, y = data[1]
    assert x.shape == (1, 28, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    assert torch.allclose(x[0], torch.from_numpy(arrays[f"{split}_images"][1] / 255.0).float())
    assert y.shape == () and y.item() == arrays[f"{split}_labels"][1, 0]


def test_medmnist_multilabel_and_n_classes(tmp_path):
    arrays = _write_npz(tmp_path / "m.npz", multilabel=True)
    data = MedMNIST3D(tmp_path / "m.npz")
    assert data[0][1].shape == (3,) and data.n_classes == 3
    assert torch.equal(data[0][1], torch.from_numpy(arrays["train_labels"][0]).float())


def test_medmnist_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="npz_path"):
        MedMNIST3D(tmp_path / "missing.npz")
    np.savez(tmp_path / "wrong.npz", images=np.zeros((2, 4, 4, 4)))
    with pytest.raises(ValueError, match="npz_path: .*no train_images"):
        MedMNIST3D(tmp_path / "wrong.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="npz_path: .*junk.npz.* not a readable"):
        MedMNIST3D(tmp_path / "junk.npz")


def test_phantoms_written_as_nifti_read_back_as_the_same_items(tmp_path):
    """A NIfTI folder of synthetic CT patients gives the items PhantomSet gives (inputs, targets)."""
    phantoms = pytest.importorskip("radlab.phantoms")
    ph = phantoms.make_phantoms(3, size=16, modality="ct", spacing=(5.0, 0.7, 0.7), seed=0)
    (tmp_path / "images").mkdir()
    ids = [f"p{i}" for i in range(len(ph))]
    for case, image in zip(ids, ph.images):
        save_nifti(Volume(image[0].numpy(), ph.spacing), tmp_path / "images" / f"{case}.nii.gz")
    pd.DataFrame({"id": ids, "label": ph.labels.numpy()}).to_csv(tmp_path / "labels.csv", index=False)
    data = NiftiFolder(tmp_path, preprocess=ct_window)
    for i, case in enumerate(ids):
        x, y = data[data.ids.index(case)]
        assert torch.equal(x, ph.inputs[i]) and y.item() == ph.targets[i].item()
    assert data.volume(0).spacing == (5.0, 0.7, 0.7)
