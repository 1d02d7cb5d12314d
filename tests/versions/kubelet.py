"""The kubelet's way of updating a ConfigMap mounted as a directory (its AtomicWriter):
each update writes a fresh timestamped directory, points a temporary link at it and
renames that link over ``..data``; every key is a link ``<key> -> ..data/<key>`` made once.
A reader that follows the links sees either the old or the new set of files, never a mix."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


def project(mount: Path, data: dict[str, str]) -> None:
    """Make ``mount`` show ``data`` (key -> text) the way the kubelet does."""
    mount.mkdir(parents=True, exist_ok=True)
    stamp = mount / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for key, text in data.items():
        (stamp / key).write_text(text)
    tmp_link = mount / "..data_tmp"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    os.symlink(stamp.name, tmp_link)
    data_link = mount / "..data"
    old = os.readlink(data_link) if data_link.is_symlink() else None
    os.rename(tmp_link, data_link)  # the atomic swap
    for key in data:
        link = mount / key
        if not link.is_symlink():
            os.symlink(f"..data/{key}", link)
    for entry in mount.iterdir():  # keys removed from the ConfigMap disappear
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in data:
            entry.unlink()
    if old is not None:
        shutil.rmtree(mount / old, ignore_errors=True)
