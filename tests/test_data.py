"""Tests of zeroflow.data: class order, scenario splits, datasets, transforms and errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode, RandomResizedCrop

from zeroflow.data import DATASETS, Scenario, class_order, load_dataset
from zeroflow.data.transforms import random_resized_crop_params
from zeroflow.errors import ConfigError, DataError
from zeroflow.seeding import derive_seed

# ----------------------------------------------------------------------------- class order


@pytest.mark.parametrize(
    "n, head",
    [
        (100, [68, 56, 78, 8, 23, 84, 90, 65, 74, 76]),
        (200, [168, 136, 51, 9, 183]),
        (300, [169, 221, 146, 296, 92]),
    ],
)
def test_class_order_matches_pilot(n, head):
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    order = class_order(n)
    assert order[: len(head)] == head
    assert sorted(order) == list(range(n))
    assert all(type(c) is int for c in order)
    # numpy's global RNG is untouched
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_class_order_identity_and_seed():
    assert class_order(7, shuffle=False) == list(range(7))
    assert class_order(50, seed=1) == np.random.RandomState(1).permutation(50).tolist()
    assert class_order(50, seed=1) != class_order(50, seed=2)


# ----------------------------------------------------------------------------- scenario


class _Toy:
    """Base dataset whose item is (index, original label): lets tests trace remapping."""

    def __init__(self, targets, num_classes):
        self.targets = np.asarray(targets, dtype=np.int64)
        self.num_classes = num_classes
        self.epochs = []

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return i, int(self.targets[i])

    def set_epoch(self, seed, epoch):
        self.epochs.append((seed, epoch))


def _toy_pair(n_classes=10, per_train=3, per_test=2):
    train = _Toy(np.repeat(np.arange(n_classes), per_train), n_classes)
    test = _Toy(np.tile(np.arange(n_classes), per_test), n_classes)
    return train, test


def test_scenario_tasks_and_remap():
    train, test = _toy_pair()
    sc = Scenario(train, test, init_cls=4, increment=3, order_seed=5)
    order = np.random.RandomState(5).permutation(10).tolist()
    assert sc.order == order
    assert sc.num_classes == 10 and sc.n_tasks == 3
    assert [sc.task_classes(t) for t in range(3)] == [range(0, 4), range(4, 7), range(7, 10)]
    assert [sc.classes_seen(t) for t in range(3)] == [4, 7, 10]
    np.testing.assert_array_equal(sc.remap(order), np.arange(10))
    assert sc.remap([order[3]]).tolist() == [3]

    sizes = []
    for t in range(3):
        tr = sc.train_set(t)
        assert len(tr) == 3 * len(sc.task_classes(t))
        sizes.append(len(tr))
        assert set(tr.targets.tolist()) == set(sc.task_classes(t))
        for k in range(len(tr)):
            idx, y = tr[k]
            assert idx == tr.indices[k]
            assert y == tr.targets[k] == order.index(train.targets[idx])
        te = sc.test_set(t)
        assert len(te) == 2 * len(sc.task_classes(t))
        assert set(te.targets.tolist()) == set(sc.task_classes(t))
        upto = sc.test_set_upto(t)
        assert len(upto) == 2 * sc.classes_seen(t)
        assert set(upto.targets.tolist()) == set(range(sc.classes_seen(t)))
    assert sum(sizes) == len(train)
    assert len(sc.test_set_upto(2)) == len(test)

    sc.train_set(1).set_epoch(7, 2)
    assert train.epochs == [(7, 2)]
    with pytest.raises(IndexError):
        sc.train_set(3)


def test_scenario_without_shuffle_keeps_labels():
    train, test = _toy_pair(6)
    sc = Scenario(train, test, init_cls=2, increment=2, shuffle=False)
    assert sc.order == list(range(6))
    np.testing.assert_array_equal(sc.train_set(2).targets, [4, 4, 4, 5, 5, 5])


@pytest.mark.parametrize("init_cls, increment", [(3, 2), (11, 1), (0, 2), (2, 0), (2.0, 2)])
def test_scenario_bad_split_raises(init_cls, increment):
    train, test = _toy_pair(10)
    with pytest.raises(ConfigError) as err:
        Scenario(train, test, init_cls=init_cls, increment=increment)
    msg = str(err.value)
    assert "\n" not in msg
    assert "init_cls" in msg or "increment" in msg


def test_scenario_bad_split_message_names_counts():
    train, test = _toy_pair(10)
    with pytest.raises(ConfigError, match=r"init_cls=3, increment=2 .*num_classes=10"):
        Scenario(train, test, init_cls=3, increment=2)


# ----------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits32():
    return load_dataset("digits", image_size=32)


def test_digits_split_shapes_and_range(digits32):
    train, test = digits32
    assert (len(train), len(test)) == (1347, 450)
    assert train.num_classes == test.num_classes == 10
    assert train.targets.dtype == np.int64
    assert set(train.targets.tolist()) == set(range(10)) == set(test.targets.tolist())
    # stratified: every class holds 25 % (+-1) of its samples in test
    full = np.bincount(load_digits().target, minlength=10)
    assert np.all(np.abs(np.bincount(test.targets, minlength=10) - full * 0.25) <= 1)
    x, y = train[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y == train.targets[5] and isinstance(y, int)
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert float(train.images.max()) > 0.9


def test_digits_split_is_deterministic(digits32):
    train, test = digits32
    train2, test2 = load_dataset("digits", image_size=32)
    np.testing.assert_array_equal(train.targets, train2.targets)
    np.testing.assert_array_equal(test.targets, test2.targets)
    assert torch.equal(train.images, train2.images)
    assert torch.equal(train[17][0], train[17][0])


def test_digits_pixels_are_scaled_by_16():
    # at the native size the bilinear resize is the identity: pixels must be raw / 16
    train, test = load_dataset("digits", image_size=8)
    raw = load_digits()
    for ds in (train, test):
        x, y = ds[0]
        matches = [
            i for i in np.flatnonzero(raw.target == y)
            if np.allclose(raw.images[i] / 16.0, x[0].numpy())
        ]
        assert matches, "the first sample is not any raw digit divided by 16"


def test_digits_scenario_five_tasks(digits32):
    train, test = digits32
    sc = Scenario(train, test, init_cls=2, increment=2)
    assert sc.n_tasks == 5
    assert sc.order == class_order(10)
    total = 0
    for t in range(5):
        tr = sc.train_set(t)
        total += len(tr)
        assert set(tr.targets.tolist()) == {2 * t, 2 * t + 1}
        x, y = tr[0]
        assert x.shape == (3, 32, 32) and y in sc.task_classes(t)
        assert set(sc.test_set_upto(t).targets.tolist()) == set(range(2 * t + 2))
    assert total == len(train)


# ----------------------------------------------------------------------------- image folders


def _write_folder(root, name="cub", classes=("ant", "bee", "cat"), per_class=4, size=(40, 30)):
    rng = np.random.RandomState(0)
    for split in ("train", "test"):
        for c in classes:
            d = root / name / split / c
            d.mkdir(parents=True)
            for k in range(per_class):
                arr = rng.randint(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{k}.png")
    return root / name


@pytest.fixture()
def cub_root(tmp_path):
    _write_folder(tmp_path)
    return tmp_path


def test_folder_dataset_loads_with_reference_transforms(cub_root):
    train, test = load_dataset("cub", data_root=cub_root, image_size=32)
    assert train.num_classes == test.num_classes == 3
    assert train.classes == ["ant", "bee", "cat"]
    np.testing.assert_array_equal(train.targets, [0] * 4 + [1] * 4 + [2] * 4)
    assert len(test) == 12
    x, y = train[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 1
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0

    # test transform: Resize(round(32*256/224)=37, bicubic) + CenterCrop(32), no normalisation
    img = Image.open(cub_root / "cub" / "test" / "bee" / "1.png").convert("RGB")
    expected = TF.to_tensor(
        TF.center_crop(TF.resize(img, 37, interpolation=InterpolationMode.BICUBIC), [32, 32])
    )
    xt, yt = test[5]
    assert yt == 1
    torch.testing.assert_close(xt, expected, atol=0, rtol=0)


def test_train_transform_deterministic_per_seed_epoch_index(cub_root):
    train, _ = load_dataset("cub", data_root=cub_root, image_size=32)
    other, _ = load_dataset("cub", data_root=cub_root, image_size=32)
    global_state = torch.get_rng_state()
    train.set_epoch(3, 0)
    other.set_epoch(3, 0)
    a = [train[i][0] for i in range(len(train))]
    assert all(torch.equal(a[i], other[i][0]) for i in range(len(train)))
    assert torch.equal(torch.get_rng_state(), global_state), "touched torch's global RNG"
    train.set_epoch(3, 1)
    b = [train[i][0] for i in range(len(train))]
    assert sum(not torch.equal(u, v) for u, v in zip(a, b, strict=True)) >= len(a) - 1
    train.set_epoch(4, 0)
    assert not torch.equal(train[0][0], a[0])
    # independent of DataLoader workers and batch order
    train.set_epoch(3, 1)
    loader = DataLoader(train, batch_size=5, num_workers=2, shuffle=False)
    batched = torch.cat([xb for xb, _ in loader])
    assert torch.equal(batched, torch.stack(b))


def test_train_transform_is_reference_crop_then_flip(cub_root):
    # rebuild each train image by hand: crop box, then flip if a U(0,1) draw is < 0.5
    train, _ = load_dataset("cub", data_root=cub_root, image_size=32)
    train.set_epoch(11, 2)
    flips = []
    for i in range(len(train)):
        gen = torch.Generator().manual_seed(derive_seed(11, 2, i))
        top, left, h, w = random_resized_crop_params(40, 30, gen)
        flip = float(torch.rand(1, generator=gen)) < 0.5
        flips.append(flip)
        img = train.folder.loader(train.folder.samples[i][0])
        img = TF.resized_crop(img, top, left, h, w, [32, 32], InterpolationMode.BILINEAR)
        expected = TF.to_tensor(TF.hflip(img) if flip else img)
        torch.testing.assert_close(train[i][0], expected, atol=0, rtol=0)
    assert 0 < sum(flips) < len(flips), "both flip outcomes should occur in 12 draws"


def test_crop_params_match_torchvision_distribution():
    img = torch.zeros(3, 30, 40)
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        mine = random_resized_crop_params(40, 30, gen)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            ref = RandomResizedCrop.get_params(img, [0.05, 1.0], [3 / 4, 4 / 3])
        assert mine == tuple(ref)


def test_crop_params_fallback_is_center_crop():
    # a 1000x10 strip: no box of >= 5 % area with ratio <= 4/3 fits, so the fallback applies
    gen = torch.Generator().manual_seed(0)
    assert random_resized_crop_params(1000, 10, gen) == (0, 493, 10, 13)


def test_derive_seed_is_stable_and_order_sensitive():
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert derive_seed(1, 2, 3) != derive_seed(1, 3, 2)
    assert derive_seed(0, 0, 0) != derive_seed(0, 0, 1)
    assert 0 <= derive_seed(-5, 2**40, 7) < 2**63
    # pinned value: seeds must not change across versions or platforms
    assert derive_seed(1993, 0, 0) == 3293057190285441948


def test_folder_missing_raises_with_path(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("imagenet-a", data_root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "imagenet-a") in msg
    assert "<data_root>/imagenet-a/{train,test}/<class>/" in msg
    assert "\n" not in msg


def test_folder_without_class_subfolders_raises(tmp_path):
    for split in ("train", "test"):
        d = tmp_path / "omnibenchmark" / split
        d.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(d / "flat.png")
    with pytest.raises(DataError) as err:
        load_dataset("omnibenchmark", data_root=tmp_path)
    assert str(tmp_path / "omnibenchmark" / "train") in str(err.value)
    assert "no class subfolders" in str(err.value)


def test_folder_missing_split_raises(tmp_path):
    (tmp_path / "cub" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="missing split folder") as err:
        load_dataset("cub", data_root=tmp_path)
    assert str(tmp_path / "cub" / "test") in str(err.value)


def test_folder_class_mismatch_raises(tmp_path):
    base = _write_folder(tmp_path, classes=("a", "b"))
    (base / "test" / "b").rename(base / "test" / "c")
    with pytest.raises(DataError) as err:
        load_dataset("cub", data_root=tmp_path)
    msg = str(err.value)
    assert str(base / "train") in msg and "only in train: ['b']" in msg
    assert "only in test: ['c']" in msg


def test_folder_empty_class_raises(tmp_path):
    base = _write_folder(tmp_path, classes=("a", "b"))
    for f in (base / "test" / "b").iterdir():
        f.unlink()
    with pytest.raises(DataError) as err:
        load_dataset("cub", data_root=tmp_path)
    assert str(base / "test") in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- cifar100


def _write_fake_cifar(root, n_classes=4, n_train=8, n_test=4):
    """CIFAR-100 python layout; str keys, as torchvision sees them after latin1 unpickling."""
    rng = np.random.RandomState(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.randint(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [i % n_classes for i in range(n)]
        arrays[split] = (data, labels)
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": labels}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(n_classes)]}, f)
    return arrays


def test_cifar100_fake_folder_loads(tmp_path):
    arrays = _write_fake_cifar(tmp_path)
    train, test = load_dataset("cifar100", data_root=tmp_path, image_size=32)
    assert train.num_classes == test.num_classes == 4
    assert train.classes == ["c0", "c1", "c2", "c3"]
    np.testing.assert_array_equal(train.targets, arrays["train"][1])
    np.testing.assert_array_equal(test.targets, arrays["test"][1])
    assert (len(train), len(test)) == (8, 4)
    x, y = train[3]
    assert x.shape == (3, 32, 32) and y == 3
    # test image = reference test transform of the stored CHW pixels
    hwc = arrays["test"][0][2].reshape(3, 32, 32).transpose(1, 2, 0)
    img = Image.fromarray(hwc)
    expected = TF.to_tensor(
        TF.center_crop(TF.resize(img, 37, interpolation=InterpolationMode.BICUBIC), [32, 32])
    )
    torch.testing.assert_close(test[2][0], expected, atol=0, rtol=0)


def test_cifar100_missing_raises(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", data_root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar-100-python") in msg and "download=true" in msg
    assert "\n" not in msg


def test_cifar100_corrupt_raises(tmp_path):
    _write_fake_cifar(tmp_path)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="could not read CIFAR-100"):
        load_dataset("cifar100", data_root=tmp_path)


# ----------------------------------------------------------------------------- registry


def test_registry_and_unknown_name():
    assert set(DATASETS) == {"digits", "cifar100", "cub", "imagenet-a", "omnibenchmark"}
    assert {k: v.num_classes for k, v in DATASETS.items()} == {
        "digits": 10, "cifar100": 100, "cub": 200, "imagenet-a": 200, "omnibenchmark": 300
    }
    with pytest.raises(ConfigError) as err:
        load_dataset("mnist")
    msg = str(err.value)
    assert "'mnist'" in msg
    assert all(name in msg for name in DATASETS)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_image_size_raises(size):
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("digits", image_size=size)


def test_samples_per_class_keeps_the_first_n_of_each_class():
    train, test = load_dataset("digits", image_size=8)
    full = Scenario(train, test, 5, 5)
    capped = Scenario(train, test, 5, 5, samples_per_class=7)
    for t in range(2):
        counts = np.bincount(capped.train_set(t).targets, minlength=10)
        assert list(counts[capped.task_classes(t).start:capped.task_classes(t).stop]) == [7] * 5
        # the kept samples are the first ones (by index) of each class in the full task
        for c in capped.task_classes(t):
            full_idx = full.train_set(t).indices[full.train_set(t).targets == c][:7]
            assert list(capped.train_set(t).indices[capped.train_set(t).targets == c]) == list(
                full_idx)
    assert len(capped.test_set_upto(1)) == 70
