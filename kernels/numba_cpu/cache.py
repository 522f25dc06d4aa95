"""Keeps Numba's on-disk cache of these kernels true to their sources.

Numba keys a cached kernel by its own function's source and the CPU, not by what it inlines from
other files (simd.py's intrinsics, matmul_micro.py's tile) nor by the vector width picked at
import: after an edit to a helper, or with PYAI_VECTOR_WIDTH, a cached attention kernel would
still be built for the old tile, and read and write past its arrays. So a stamp of every source
file in this folder, kernels/common.py, the vector width and Numba's version is kept beside the
cache, and the cache of this folder is emptied whenever the stamp changes.
"""

import hashlib
import os
import pathlib

import numba
from numba.core.caching import CacheImpl

FOLDER = pathlib.Path(__file__).parent
STAMP_NAME = "pyai-kernels.stamp"


def stamp(width):
    digest = hashlib.sha256(f"numba {numba.__version__} width {width}\n".encode())
    for source in sorted([*FOLDER.glob("*.py"), FOLDER.parent / "common.py"]):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def cache_folder():
    """Where Numba caches the kernels of this folder: its first locator that applies here."""
    source = str(FOLDER / "matmul.py")
    for locator_class in CacheImpl._locator_classes:
        locator = locator_class.from_function(stamp, source)
        if locator is not None:
            return pathlib.Path(locator.get_cache_path())
    return None


def refresh(width):
    """Empty the cache folder of these kernels if it was filled for other sources or another width."""
    folder = cache_folder()
    if folder is None:
        return
    expected = stamp(width)
    stamp_file = folder / STAMP_NAME
    if stamp_file.exists() and stamp_file.read_text() == expected:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for cached in [*folder.glob("*.nbi"), *folder.glob("*.nbc")]:
        cached.unlink(missing_ok=True)
    temporary = folder / f"{STAMP_NAME}.{os.getpid()}"
    temporary.write_text(expected)
    os.replace(temporary, stamp_file)
