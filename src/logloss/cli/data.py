"""Dataset commands: ``logloss data list``, ``logloss data fetch``, ``logloss data show``.

Also :func:`add_data_arguments`, which every command that reads a dataset uses to add the same
``--data-dir DIR`` and ``--dataset NAME`` options.  The work is done by :mod:`logloss.data`
(NumPy only: ``logloss --help`` stays fast).
``--verbose`` (every command with ``--data-dir``) adds an error's details below its one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from logloss._json import dumps
from logloss.cli import CLIError, add_json_flag
from logloss.data import (
    DATASETS,
    SPLITS,
    download_dataset,
    find_dataset,
    get_dataset,
    load_dataset,
    sha256_file,
)
from logloss.data.locations import download_root
from logloss.data.render import image_to_text, save_png

DATASET_NAMES = tuple(DATASETS)
MIRRORS_ENV_VAR = "LOGLOSS_MIRRORS"
SPLIT_NAMES = SPLITS  # the files of a dataset: train and test


def data_dir_help(*, downloads: bool) -> str:
    """The help of ``--data-dir``: where datasets are looked for, and whether this command
    downloads into it."""
    where = (
        "data folder holding one subfolder per dataset (mnist/, fashion-mnist/, kmnist/) with the "
        "original .gz files; searched first, then $LOGLOSS_DATA, then the user cache "
        "(~/.cache/logloss)"
    )
    if downloads:
        return f"{where}; downloads go here when given (default: none)"
    return f"{where}; this command never downloads: `logloss data fetch NAME` does (default: none)"


def add_data_arguments(
    parser: argparse.ArgumentParser,
    *,
    dataset: bool = True,
    default_dataset: str = "mnist",
    datasets: tuple[str, ...] = DATASET_NAMES,
    downloads: bool = True,
) -> None:
    """Add the standard ``--data-dir DIR``, ``--verbose`` (and ``--dataset NAME``) options.

    Parsed values: ``args.data_dir`` (``Path`` or ``None``), ``args.verbose`` and ``args.dataset``
    (a name); pass them on as ``load_dataset(args.dataset, split, data_dir=args.data_dir)``.  With
    ``--verbose``, ``logloss`` prints an error's ``details`` (every place a dataset was looked
    for, every download attempt) below its one-line message.  ``datasets`` are the choices this
    command accepts and ``downloads`` whether it may download: the help says what the command
    really does.
    """
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=data_dir_help(downloads=downloads),
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=False,
        help="on a data error, also list every place looked in and every download attempt",
    )
    if dataset:
        bundled = " (digits is bundled and works offline)" if "digits" in datasets else ""
        parser.add_argument(
            "--dataset",
            choices=datasets,
            default=default_dataset,
            metavar="NAME",
            help=f"dataset: {', '.join(datasets)}{bundled} (default: {default_dataset})",
        )


def _add_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", choices=DATASET_NAMES, metavar="NAME", help=f"one of {', '.join(DATASET_NAMES)}"
    )


def register(subparsers: Any) -> None:
    """Add ``logloss data ...`` to the ``logloss`` parser."""
    data = subparsers.add_parser(
        "data",
        help="list, download and look at datasets",
        description="Datasets are looked for in --data-dir, then $LOGLOSS_DATA, then the user "
        "cache; missing ones are downloaded from public mirrors and verified by SHA-256.",
    )
    data.set_defaults(handler=lambda args: _usage(data))
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND")

    listing = commands.add_parser(
        "list",
        help="the datasets, and where each is found",
        description="For each dataset: its size, and the place it was found in (or where "
        "`logloss data fetch` would download it).",
    )
    add_data_arguments(listing, dataset=False, downloads=False)
    add_json_flag(listing)
    listing.set_defaults(handler=run_list)

    _register_fetch(commands)

    show = commands.add_parser(
        "show",
        help="print one image as text art with its label (and write it as PNG)",
        description="Print image number I of a split as text art and its label; --png "
        "writes the image as a grayscale PNG.",
    )
    _add_name(show)
    show.add_argument(
        "--index", type=int, required=True, metavar="I", help="image number, from 0 (required)"
    )
    show.add_argument(
        "--split", choices=SPLIT_NAMES, default="train", help="train or test (default: train)"
    )
    show.add_argument(
        "--png", type=Path, default=None, metavar="FILE", help="also write the image to FILE"
    )
    show.add_argument(
        "--scale",
        type=int,
        default=1,
        metavar="N",
        help="with --png, magnify each pixel to N x N (1-64, default: 1)",
    )
    add_data_arguments(show, dataset=False)
    add_json_flag(show)
    show.set_defaults(handler=run_show)


def _register_fetch(commands: Any) -> None:
    """Add ``logloss data fetch``."""
    fetch = commands.add_parser(
        "fetch",
        help="download a dataset (verified by SHA-256) unless it is already present",
        description="Download the dataset's missing files into --data-dir, or the user cache "
        "without it, trying each mirror in turn and checking each file's published SHA-256 "
        "before keeping it.",
        epilog=f"environment: {MIRRORS_ENV_VAR} replaces the built-in mirrors (behind a proxy or "
        "with a local mirror): base URLs separated by spaces, {dataset} standing for the "
        f"dataset's name and the word default for the built-in mirrors, e.g. {MIRRORS_ENV_VAR}="
        "'https://mirror.example/{dataset}/ default'. A transfer slower than 4 KiB/s (over 30 "
        "s) or longer than 10 minutes moves on to the next mirror; https_proxy and http_proxy "
        "are honoured.",
    )
    _add_name(fetch)
    add_data_arguments(fetch, dataset=False)
    fetch.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=True,
        help="do not show progress bars",
    )
    add_json_flag(
        fetch,
        "print the result as JSON: the dataset, its folder, and each file's name, size, SHA-256 "
        "and whether it was downloaded or already present",
    )
    fetch.set_defaults(handler=run_fetch)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _dataset_status(name: str, data_dir: Path | None) -> dict[str, Any]:

    info = get_dataset(name)
    status: dict[str, Any] = {
        "name": name,
        "description": info.description,
        "image_shape": list(info.image_shape),
        "samples": dict(info.sizes),
    }
    if info.bundled:
        return {**status, "found": True, "source": "bundled", "path": None, "cached": False}
    found = find_dataset(name, None, data_dir)
    partial = [s for s in SPLITS if find_dataset(name, s, data_dir)] if found is None else []
    return {
        **status,
        "found": found is not None,
        "splits_found": list(SPLITS) if found else partial,
        "source": found[0].source if found else None,
        "path": str(found[1]) if found else None,
        "cached": bool(found) and found[0].source == "user cache",
        "download_to": None if found else str(download_root(data_dir) / name),
    }


def run_list(args: argparse.Namespace) -> int:

    rows = [_dataset_status(name, args.data_dir) for name in DATASETS]
    if args.json:
        print(dumps(rows))
        return 0
    from rich.console import Console  # rich: only for the table
    from rich.table import Table

    table = Table(title="datasets (searched: --data-dir, $LOGLOSS_DATA, user cache)")
    for column in ("dataset", "images", "train/test", "found in"):
        table.add_column(column, no_wrap=True)
    table.add_column("location", overflow="fold")
    for row in rows:
        shape = "x".join(map(str, row["image_shape"]))
        sizes = f"{row['samples']['train']}/{row['samples']['test']}"
        if row["source"] == "bundled":
            where, location = "bundled", "ships with logloss (offline)"
        elif row["found"]:
            where, location = row["source"], row["path"]
        else:
            partial = ", ".join(row["splits_found"])
            where = f"only {partial}" if partial else "not found"
            location = f"`logloss data fetch` downloads to {row['download_to']}"
        table.add_row(row["name"], shape, sizes, where, location)
    # Piped output is not cut at 80 columns: paths must stay whole to be copied.
    Console(width=None if sys.stdout.isatty() else 1000).print(table)
    return 0


def _file_records(info: Any, folder: Path, downloaded: set[str]) -> list[dict[str, Any]]:
    """Name, size, SHA-256 (and whether it is the published one) and status of each file."""

    records = []
    for file in info.all_files:
        sha256 = sha256_file(folder / file.name)
        records.append(
            {
                "name": file.name,
                "bytes": (folder / file.name).stat().st_size,
                "sha256": sha256,
                "matches_published_sha256": sha256 == file.sha256,
                "status": "downloaded" if file.name in downloaded else "present",
            }
        )
    return records


def run_fetch(args: argparse.Namespace) -> int:

    info = get_dataset(args.name)
    if info.bundled:
        if args.json:
            print(dumps({"dataset": args.name, "folder": None, "status": "bundled", "files": []}))
        else:
            print(f"{args.name} ships with logloss: nothing to download")
        return 0
    found = find_dataset(args.name) if args.data_dir is None else None  # anywhere will do
    # With --data-dir: that folder only.
    folder = found[1] if found is not None else download_root(args.data_dir) / args.name
    missing = {f.name for f in info.all_files if not (folder / f.name).is_file()}
    if found is None:
        download_dataset(args.name, args.data_dir, progress=args.progress)
    if args.json:
        files = _file_records(info, folder, missing)
        status = "downloaded" if missing else "present"
        print(
            dumps({"dataset": args.name, "folder": str(folder), "status": status, "files": files})
        )
    elif missing:
        print(f"{args.name}: all files downloaded and verified in {folder}")
    else:
        where = f" ({found[0].source})" if found is not None else ""
        print(f"{args.name} is already present{where}: {folder}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    if args.index < 0:
        raise CLIError(f"--index {args.index} is negative; samples are numbered from 0")
    if not 1 <= args.scale <= 64:
        raise CLIError(f"--scale must be an integer from 1 to 64, got {args.scale}")
    images, labels = load_dataset(args.name, args.split, data_dir=args.data_dir)
    if not 0 <= args.index < len(labels):
        raise CLIError(
            f"--index {args.index} is out of range: the {args.split} split of {args.name} has "
            f"{len(labels)} images, numbered 0 to {len(labels) - 1}"
        )
    image, label = images[args.index], int(labels[args.index])
    name = get_dataset(args.name).classes[label]
    if args.png is not None:
        save_png(args.png, image, scale=args.scale)
    if args.json:
        record = {
            "dataset": args.name,
            "split": args.split,
            "index": args.index,
            "label": label,
            "class": name,
            "image": image.tolist(),
            "png": None if args.png is None else str(args.png),
        }
        print(dumps(record, indent=None))
        return 0
    print(image_to_text(image))
    caption = f"label: {label}" + ("" if name == str(label) else f" ({name})")
    print(f"{args.name} {args.split}[{args.index}]  {caption}")
    if args.png is not None:
        print(f"wrote {args.png}")
    return 0
