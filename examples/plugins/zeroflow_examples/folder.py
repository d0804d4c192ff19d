"""``digits-folder``: a dataset registered over an ImageFolder layout,
``<data_root>/digits-folder/{train,test}/<class>/<image>.png``.

Any folder of that shape registers the same way (``register_dataset`` with
``folder_dataset``); this one is sklearn's 8×8 digits written out as PNG files, so the example
runs offline: ``download=true`` (or ``python -m zeroflow_examples.folder DATA_ROOT``) writes them.
Every fourth image of a class (by index) is a test image.
"""

from __future__ import annotations

import sys
from pathlib import Path

from zeroflow.data import folder_dataset, register_dataset

NAME = "digits-folder"
LAYOUT = f"<data_root>/{NAME}/{{train,test}}/<class>/*.png"


def write_digits_folder(data_root: str | Path) -> Path:
    """Write sklearn's digits as ``<data_root>/digits-folder/{train,test}/<digit>/<i>.png``."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(data_root).expanduser().absolute() / NAME
    digits = load_digits()
    seen: dict[int, int] = {}
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        n = seen[int(label)] = seen.get(int(label), -1) + 1
        folder = root / ("test" if n % 4 == 3 else "train") / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.asarray(image) * (255.0 / 16.0), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    return root


def load(data_root: Path, image_size: int, download: bool):
    root = Path(data_root) / NAME
    if download and not root.is_dir():
        write_digits_folder(data_root)
    return folder_dataset(root, image_size)


register_dataset(NAME, load, num_classes=10, split=(2, 2), layout=LAYOUT)

if __name__ == "__main__":
    print(write_digits_folder(sys.argv[1] if len(sys.argv) > 1 else "data"))
