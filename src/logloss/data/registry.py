"""What each dataset is: its files, their published SHA-256 checksums and sizes, and its mirrors.

Checksums and sizes are those published by TensorFlow Datasets (``url_checksums/mnist.txt``,
``fashion_mnist.txt``, ``kmnist.txt``) for the original files; three of MNIST's also agree with the
md5 sums torchvision publishes.  Downloads are verified against them before use.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "DATASETS",
    "MIRRORS",
    "MIRRORS_ENV_VAR",
    "SPLITS",
    "DatasetInfo",
    "FileInfo",
    "get_dataset",
    "mirrors_for",
    "parse_mirrors",
]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class FileInfo:
    """One original file: its name, published SHA-256 (hex) and size in bytes."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: where its files live and what its images and labels are.

    ``files`` maps each split to its (images, labels) files; ``bundled`` datasets ship inside the
    package and are never searched for or downloaded.
    """

    name: str
    description: str
    image_shape: tuple[int, int]
    classes: tuple[str, ...]
    files: Mapping[str, tuple[FileInfo, FileInfo]]
    homepage: str
    license: str
    bundled: bool = False
    sizes: Mapping[str, int] = field(default_factory=dict)  # samples per split

    @property
    def all_files(self) -> tuple[FileInfo, ...]:
        """Every file of every split, images before labels, train before test."""
        return tuple(f for split in SPLITS for f in self.files.get(split, ()))

    def idx_sizes(self, split: str) -> tuple[int, int]:
        """The decompressed sizes in bytes of the split's IDX files, images then labels:
        ``16 + N * H * W`` and ``8 + N`` for N samples of H x W uint8 images (each header is 4
        bytes plus 4 per dimension).  No file of the split may be larger.

        >>> DATASETS["mnist"].idx_sizes("train")
        (47040016, 60008)
        """
        samples = self.sizes[split]
        height, width = self.image_shape
        return 16 + samples * height * width, 8 + samples


def _idx_files(checksums: Mapping[str, tuple[str, int]]) -> dict[str, tuple[FileInfo, FileInfo]]:
    # The four-file layout shared by MNIST, Fashion-MNIST and KMNIST.
    def info(name: str) -> FileInfo:
        return FileInfo(name, *checksums[name])

    return {
        "train": (info("train-images-idx3-ubyte.gz"), info("train-labels-idx1-ubyte.gz")),
        "test": (info("t10k-images-idx3-ubyte.gz"), info("t10k-labels-idx1-ubyte.gz")),
    }


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        description="handwritten digits 0-9 (LeCun, Cortes & Burges)",
        image_shape=(28, 28),
        classes=tuple("0123456789"),
        files=_idx_files(
            {
                "train-images-idx3-ubyte.gz": (
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    9912422,
                ),
                "train-labels-idx1-ubyte.gz": (
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    28881,
                ),
                "t10k-images-idx3-ubyte.gz": (
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    1648877,
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    4542,
                ),
            }
        ),
        homepage="http://yann.lecun.com/exdb/mnist/",
        license="CC BY-SA 3.0 (as stated by the TensorFlow Datasets and torchvision catalogues)",
        sizes={"train": 60000, "test": 10000},
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        description="Zalando article images in 10 classes, a drop-in replacement for MNIST",
        image_shape=(28, 28),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        files=_idx_files(
            {
                "train-images-idx3-ubyte.gz": (
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    26421880,
                ),
                "train-labels-idx1-ubyte.gz": (
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    29515,
                ),
                "t10k-images-idx3-ubyte.gz": (
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    4422102,
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                    5148,
                ),
            }
        ),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        license="MIT",
        sizes={"train": 60000, "test": 10000},
    ),
    "kmnist": DatasetInfo(
        name="kmnist",
        description="Kuzushiji-MNIST: 10 classes of cursive Japanese (hiragana) characters",
        image_shape=(28, 28),
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        files=_idx_files(
            {
                "train-images-idx3-ubyte.gz": (
                    "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                    18165135,
                ),
                "train-labels-idx1-ubyte.gz": (
                    "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                    29497,
                ),
                "t10k-images-idx3-ubyte.gz": (
                    "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                    3041136,
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
                    5120,
                ),
            }
        ),
        homepage="https://github.com/rois-codh/kmnist",
        license="CC BY-SA 4.0",
        sizes={"train": 60000, "test": 10000},
    ),
    "digits": DatasetInfo(
        name="digits",
        description="8x8 handwritten digits (UCI optdigits via scikit-learn), bundled, offline",
        image_shape=(8, 8),
        classes=tuple("0123456789"),
        files={},
        homepage="https://archive.ics.uci.edu/dataset/80",
        license="CC BY 4.0 (UCI Machine Learning Repository)",
        bundled=True,
        sizes={"train": 1437, "test": 360},
    ),
}

# Base URLs tried in turn for each downloadable dataset; a file's URL is base + file name.
# Replaced, without code, by $LOGLOSS_MIRRORS (see mirrors_for).
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
    "kmnist": [
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ],
}


def get_dataset(name: str) -> DatasetInfo:
    """Look a dataset up by name, with an error that lists the known names.

    >>> get_dataset("mnist").image_shape
    (28, 28)
    """
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        known = ", ".join(DATASETS)
        raise ValueError(f"unknown dataset {name!r}; choose one of: {known}") from None


MIRRORS_ENV_VAR = "LOGLOSS_MIRRORS"


def mirrors_for(name: str) -> list[str]:
    """The base URLs to download ``name`` from: those of ``$LOGLOSS_MIRRORS`` when it is set
    (see :func:`parse_mirrors`), else ``MIRRORS[name]``."""
    return parse_mirrors(os.environ.get(MIRRORS_ENV_VAR, ""), name)


def parse_mirrors(setting: str, name: str) -> list[str]:
    """The base URLs a ``LOGLOSS_MIRRORS`` value names for dataset ``name``.

    The value holds http(s) base URLs separated by spaces or commas, tried in order; ``{dataset}``
    in a URL stands for the dataset's name, and the word ``default`` for the built-in mirrors
    (``MIRRORS[name]``).  An empty value means the built-in mirrors.

    Raises:
        ValueError: an entry that is neither ``default`` nor an http(s) URL.

    >>> parse_mirrors("https://mirror.example/{dataset}/ default", "kmnist")
    ['https://mirror.example/kmnist/', 'https://codh.rois.ac.jp/kmnist/dataset/kmnist/', \
'http://codh.rois.ac.jp/kmnist/dataset/kmnist/']
    >>> parse_mirrors("", "mnist") == MIRRORS["mnist"]
    True
    """
    built_in = list(MIRRORS.get(name, ()))
    entries = [entry for entry in re.split(r"[\s,]+", setting) if entry]
    if not entries:
        return built_in
    bases: list[str] = []
    for entry in entries:
        if entry == "default":
            bases.extend(built_in)
            continue
        url = urllib.parse.urlsplit(entry)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(
                f"{MIRRORS_ENV_VAR}: {entry!r} is not an http:// or https:// URL; set it to base "
                "URLs separated by spaces, with {dataset} for the dataset's name and the word "
                "default for the built-in mirrors, e.g. "
                f"{MIRRORS_ENV_VAR}='https://mirror.example/{{dataset}}/ default'"
            )
        bases.append(entry.replace("{dataset}", name))
    return bases
