"""Dataset registry and loaders: digits (embedded), CIFAR-100 and the ImageFolder benchmarks.

Every dataset returns ``(x, y)`` with ``x`` a float tensor ``[3, image_size, image_size]`` in
[0, 1] (no mean/std normalisation) and ``y`` the ORIGINAL integer label, and exposes
``.targets`` (np.int64, original labels), ``.num_classes``, ``.classes`` and
``set_epoch(seed, epoch)``. Train-time augmentation is seeded per sample from
``(seed, epoch, index)``, so an image never depends on torch's global RNG or on which
DataLoader worker produced it.
"""

from __future__ import annotations

import copy
import functools
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR100, ImageFolder

from zeroflow.data.transforms import TestTransform, TrainTransform
from zeroflow.errors import ConfigError, DataError
from zeroflow.registry import Registry
from zeroflow.seeding import derive_seed

DEFAULT_DATA_ROOT = "data"
DIGITS_TEST_SIZE = 0.25
DIGITS_SPLIT_SEED = 0


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class DigitsDataset(Dataset):
    """One split of sklearn's 8x8 digits, preloaded as ``[N, 1, S, S]`` floats in [0, 1].

    Pixels are divided by 16 and resized bilinearly to ``image_size``; the channel is
    replicated to 3 on access (the store stays 1-channel: ~360 MB for all 1,797 images at
    224). No augmentation, so ``set_epoch`` is a no-op.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, image_size: int, train: bool):
        x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 16.0).unsqueeze(1)
        self.images = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False
        ).clamp_(0.0, 1.0)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = [str(c) for c in range(10)]
        self.num_classes = 10
        self.image_size = image_size
        self.train = train

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].repeat(3, 1, 1), int(self.targets[index])

    def set_epoch(self, seed: int, epoch: int) -> None:
        """No-op: digits have no random augmentation."""

    def eval_view(self) -> DigitsDataset:
        """The same images without augmentation: digits have none, so itself."""
        return self


class ImageDataset(Dataset):
    """PIL-image dataset with the reference train/test transforms.

    Train splits draw crop and flip from a private ``torch.Generator`` seeded with
    ``derive_seed(seed, epoch, index)``; ``set_epoch`` sets ``seed`` and ``epoch``
    (both 0 until called). Test splits are deterministic.
    """

    def __init__(self, targets, classes, train: bool, image_size: int):
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.train = train
        self.image_size = image_size
        self.transform = TrainTransform(image_size) if train else TestTransform(image_size)
        self.seed = 0
        self.epoch = 0

    def set_epoch(self, seed: int, epoch: int) -> None:
        """Select the augmentation stream: sample i of this epoch uses (seed, epoch, i)."""
        self.seed, self.epoch = int(seed), int(epoch)

    def eval_view(self) -> ImageDataset:
        """A view of the same images with the test transform (no augmentation)."""
        view = copy.copy(self)
        view.train, view.transform = False, TestTransform(self.image_size)
        return view

    def load_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = range(len(self))[index]  # normalises negatives, raises IndexError
        img = self.load_image(index)
        if self.train:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, index))
            x = self.transform(img, gen)
        else:
            x = self.transform(img)
        return x, int(self.targets[index])


class FolderDataset(ImageDataset):
    """``<split_dir>/<class>/<image>`` read with torchvision's ImageFolder (RGB PIL images)."""

    def __init__(self, split_dir: Path, train: bool, image_size: int):
        self.folder = ImageFolder(str(split_dir))
        super().__init__(self.folder.targets, self.folder.classes, train, image_size)

    def load_image(self, index: int) -> Image.Image:
        return self.folder.loader(self.folder.samples[index][0])


class Cifar100Dataset(ImageDataset):
    """CIFAR-100 from torchvision's arrays (32x32 RGB uint8), upscaled by the transforms."""

    def __init__(self, cifar: CIFAR100, train: bool, image_size: int):
        self.data = cifar.data
        super().__init__(cifar.targets, cifar.classes, train, image_size)

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.data[index])


class _CIFAR100Present(CIFAR100):
    """CIFAR100 that checks the files exist but skips their md5 (used when not downloading)."""

    train_list = [["train", None]]
    test_list = [["test", None]]
    meta = {"filename": "meta", "key": "fine_label_names", "md5": None}


def _load_digits(root: Path, image_size: int, download: bool):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx_train, idx_test = train_test_split(
        np.arange(len(digits.target)),
        test_size=DIGITS_TEST_SIZE,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    return tuple(
        DigitsDataset(digits.images[idx], digits.target[idx], image_size, train)
        for idx, train in ((idx_train, True), (idx_test, False))
    )


def _load_cifar100(root: Path, image_size: int, download: bool):
    folder = root / CIFAR100.base_folder
    missing = [n for n in ("train", "test", "meta") if not (folder / n).is_file()]
    if missing and not download:
        raise DataError(
            f"CIFAR-100 not found: {folder} lacks {', '.join(missing)}; pass download=true "
            f"or place cifar-100-python/{{train,test,meta}} under {root}"
        )
    cls = CIFAR100 if download else _CIFAR100Present
    try:
        splits = [cls(str(root), train=t, download=download) for t in (True, False)]
    except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
        raise DataError(
            f"could not read CIFAR-100 from {folder} ({_one_line(e)}); replace "
            "cifar-100-python/ with the original files or pass download=true"
        ) from e
    return tuple(Cifar100Dataset(s, s.train, image_size) for s in splits)


def _class_dirs(path: Path) -> list[str]:
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_dir())


def _load_folder(name: str, root: Path, image_size: int, download: bool):
    base = root / name
    layout = f"expected layout <data_root>/{name}/{{train,test}}/<class>/*.jpg"
    if not base.is_dir():
        raise DataError(
            f"{name} not found: {base} is not a directory; {layout} "
            f"(no automatic download: set data_root to the folder holding {name}/)"
        )
    classes = {}
    for split in ("train", "test"):
        d = base / split
        if not d.is_dir():
            raise DataError(f"{name}: missing split folder {d}; {layout}")
        classes[split] = _class_dirs(d)
        if not classes[split]:
            raise DataError(f"{name}: no class subfolders in {d}; {layout}")
    if classes["train"] != classes["test"]:
        only_train = sorted(set(classes["train"]) - set(classes["test"]))[:5]
        only_test = sorted(set(classes["test"]) - set(classes["train"]))[:5]
        raise DataError(
            f"{name}: class folders differ between {base / 'train'} and {base / 'test'} "
            f"(only in train: {only_train}, only in test: {only_test}); {layout} "
            "with the same <class> folders in both"
        )
    out = []
    for split in ("train", "test"):
        try:
            out.append(FolderDataset(base / split, split == "train", image_size))
        except FileNotFoundError as e:
            raise DataError(
                f"{name}: a class folder in {base / split} has no image files ({_one_line(e)}); "
                f"{layout}"
            ) from e
    return tuple(out)


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its full class count, where it is read from, its loader, its
    default class-incremental split (classes of the first task, classes per later task) and
    its class order (None: PILOT's shuffle by ``order_seed``; else a fixed permutation)."""

    name: str
    num_classes: int
    layout: str
    loader: Callable[[Path, int, bool], tuple[Dataset, Dataset]]
    split: tuple[int, int]
    class_order: tuple[int, ...] | None = None


# the paper's splits (10 tasks each) and the embedded default's (5 tasks)
DATASETS: Registry[DatasetInfo] = Registry("dataset", {
    "digits": DatasetInfo("digits", 10, "embedded (sklearn load_digits)", _load_digits, (2, 2)),
    "cifar100": DatasetInfo(
        "cifar100", 100, "<data_root>/cifar-100-python/{train,test,meta}", _load_cifar100,
        (10, 10),
    ),
    **{
        name: DatasetInfo(
            name, n, f"<data_root>/{name}/{{train,test}}/<class>/*.jpg",
            functools.partial(_load_folder, name), split,
        )
        for name, n, split in (("cub", 200, (20, 20)), ("imagenet-a", 200, (20, 20)),
                               ("omnibenchmark", 300, (30, 30)))
    },
})


def register_dataset(name: str, loader: Callable[[Path, int, bool], tuple[Dataset, Dataset]], *,
                     num_classes: int, split: tuple[int, int], layout: str = "",
                     class_order=None) -> DatasetInfo:
    """Register dataset ``name`` (stable API; a taken name is a ``ConfigError``). loader:
    ``(data_root, image_size, download) -> (train, test)`` as the module docstring describes
    (plus ``eval_view()``; ``folder_dataset`` makes such a pair from an ImageFolder layout);
    split: the default (init_cls, increment); class_order: None shuffles by ``order_seed``
    (PILOT's), a permutation fixes it; layout: where the data is read from, for errors."""
    if not callable(loader):
        raise ConfigError(f"dataset {name!r}: loader must be a function (data_root, image_size, "
                          "download) -> (train, test)")
    init, inc = split
    if not (1 <= init <= num_classes and inc >= 1 and (num_classes - init) % inc == 0):
        raise ConfigError(f"dataset {name!r}: split={split!r} does not cut {num_classes} "
                          "classes into whole tasks; choose init + k*increment == num_classes")
    if class_order is not None:
        class_order = tuple(int(c) for c in class_order)
        if sorted(class_order) != list(range(num_classes)):
            raise ConfigError(f"dataset {name!r}: class_order must be a permutation of "
                              f"range({num_classes})")
    return DATASETS.add(str(name).lower(), DatasetInfo(
        str(name).lower(), int(num_classes), layout or "(plugin loader)", loader,
        (int(init), int(inc)), class_order))


def folder_dataset(root: str | os.PathLike, image_size: int) -> tuple[Dataset, Dataset]:
    """``(train, test)`` from an ImageFolder layout ``<root>/{train,test}/<class>/<image>``
    (the same class folders in both), as the built-in folder datasets read it."""
    root = Path(root).expanduser().absolute()
    return _load_folder(root.name, root.parent, image_size, False)


def load_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    image_size: int = 224,
    download: bool = False,
) -> tuple[Dataset, Dataset]:
    """Return ``(train, test)`` for a registered dataset name.

    ``data_root`` defaults to ``./data`` (unused by digits). ``download`` only applies to
    cifar100; the folder datasets must be placed by hand.
    """
    info = DATASETS.get(str(name).lower())
    if info is None:
        raise DATASETS.unknown(name)
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or (
        image_size < 1
    ):
        raise ConfigError(f"image_size={image_size!r} must be a positive integer (e.g. 224)")
    root = Path(DEFAULT_DATA_ROOT if data_root is None else data_root).expanduser().absolute()
    return info.loader(root, int(image_size), bool(download))
