"""What ``data.source`` may name: a built-in dataset (offline, or torchvision's), or the
location of the user's images (a folder, an archive, a URL), told apart by
:func:`is_location`. The download stage (:mod:`visiontune.data.download`) fetches them."""

from __future__ import annotations

# Offline datasets ship inside installed packages: no network needed.
OFFLINE_SOURCES = ("digits", "mnist_subset")

# torchvision dataset name -> (class name, keyword arguments of each split to merge).
TORCHVISION_SOURCES: dict[str, tuple[str, tuple[dict[str, object], ...]]] = {
    "mnist": ("MNIST", ({"train": True}, {"train": False})),
    "fashion_mnist": ("FashionMNIST", ({"train": True}, {"train": False})),
    "kmnist": ("KMNIST", ({"train": True}, {"train": False})),
    "cifar10": ("CIFAR10", ({"train": True}, {"train": False})),
    "cifar100": ("CIFAR100", ({"train": True}, {"train": False})),
    "svhn": ("SVHN", ({"split": "train"}, {"split": "test"})),
    "flowers102": ("Flowers102", ({"split": "train"}, {"split": "val"}, {"split": "test"})),
}

SOURCE_NAMES = OFFLINE_SOURCES + tuple(TORCHVISION_SOURCES)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_location(source: str) -> bool:
    """True when ``source`` is a folder, archive path or http(s) URL, not a dataset name."""
    return (
        "/" in source
        or "\\" in source
        or source.startswith((".", "~"))
        or source.lower().endswith(ARCHIVE_SUFFIXES)
    )
