"""``pytest-northflank images list|prune|load``: the image cache from the command line."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from pytest_northflank.emulator.images.cache import ImageCache
from pytest_northflank.emulator.images.load import load_images
from pytest_northflank.errors import NorthflankError

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5GiB``, ``0`` -> bytes."""
    match = _SIZE_RE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 500M or 2G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    images = commands.add_parser("images", help="the emulator's image cache")
    images.add_argument(
        "--cache", type=Path, metavar="DIR",
        help="the cache (default: $XDG_CACHE_HOME/pytest-northflank/images)",
    )  # fmt: skip
    images.set_defaults(handler=run)
    actions = images.add_subparsers(dest="images_command", required=True)
    actions.add_parser("list", help="cached images, their size and last use")
    prune = actions.add_parser("prune", help="delete least recently used images")
    prune.add_argument("--max-size", type=parse_size, default=0, metavar="SIZE",
                       help="keep the most recently used images within SIZE (default 0: "
                       "delete every image)")  # fmt: skip
    load = actions.add_parser("load", help="add a docker save tarball or OCI layout")
    load.add_argument("file", type=Path, metavar="FILE")
    load.add_argument("--name", help="name for an image the file leaves unnamed, e.g. app:1")


def run(args: argparse.Namespace) -> int:
    try:
        cache = ImageCache(args.cache)
        if args.images_command == "list":
            return _list(cache)
        if args.images_command == "prune":
            removed, freed = cache.prune(args.max_size)
            for name in removed:
                print(f"deleted {name}")
            print(f"freed {human(freed)}")
            return 0
        if not args.file.exists():
            print(f"error: {args.file}: no such file or directory", file=sys.stderr)
            return 2
        for name in load_images(args.file, cache, name=args.name):
            print(f"loaded {name}")
        return 0
    except NorthflankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _list(cache: ImageCache) -> int:
    images = cache.images()
    if not images:
        print(f"no images in {cache.root}")
        return 0
    rows = [("IMAGE", "DIGEST", "SIZE", "LAST USED")]
    for image in images:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(image.used))
        rows.append((image.name, image.manifest_digest[7:19], human(cache.image_bytes(image)),
                     used))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    print(f"cache: {cache.root}")
    return 0
