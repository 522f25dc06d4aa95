"""How the matmul cuts its operands on this CPU: the cache blocking of matmul.py.

The register tile (MR x NR) follows the vector width (matmul_micro.py); the depth of a slice,
KC = 256, keeps an MR x KC sliver of A within a quarter of any x86 L1 (6-12 KB of 32-48 KB).
    MC  rows of A per block:       an MC x KC block of A takes about 1/8 of L2 (read from the
                                   kernel, /sys/devices/system/cpu)
    NC  columns of B per panel:    2048, a KC x NC panel of 2 MB, in L3 (or a big L2): each
                                   sliver of it is read once per block of A and then stays in L1
                                   for the block's MC / MR tiles, so it costs about 2 / MC bytes
                                   a FLOP; but every panel packs again each row of A it meets, so
                                   a narrower one packs A more often: n / NC times, 4 / NC bytes
                                   a FLOP, not overlapped with the FMAs (AMD EPYC Zen 3, one core,
                                   1024^3: NC 256 60 GFLOP/s, 1024 68, 2048 69; 2 threads, 4096^3:
                                   117 -> 132)
    FEW_NC columns of B per slice in the few-rows loop, which packs a KC x FEW_NC slice and
                                   reads it at once from every A sliver: half of L2, where it
                                   stays
(2 MB L2, Intel Sapphire Rapids: MC 192, FEW_NC 1024; 1 MB, AMD Zen 4: 96, 512; 512 KB: 60, 256.)
Where the caches cannot be read, a 1 MB L2 is assumed.

`pyai tune` measures the derived MC and NC beside their halves and doubles on this machine and can
save the fastest; a saved choice (a small JSON file per CPU model in pyai's cache folder) is used
from then on, in place of the derived one.
"""

import hashlib
import json
import os
import pathlib

import llvmlite.binding

from pyai.kernels.numba_cpu.matmul_micro import MR

KC = 256
PANEL_COLUMNS = 2048
DEFAULT_L2 = 1 << 20
SYSFS = pathlib.Path("/sys/devices/system/cpu/cpu0/cache")


def l2_bytes(sysfs=SYSFS):
    """The first core's L2 size in bytes, or None where the kernel does not say."""
    for index in sorted(sysfs.glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip().upper()
                units = {"K": 1 << 10, "M": 1 << 20}
                return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        except (OSError, ValueError):
            return None
    return None


def l1_ways(sysfs=SYSFS):
    """The first core's L1 data cache's ways (8 for 32 KB, 12 for 48 KB), or None where the
    kernel does not say."""
    for index in sorted(sysfs.glob("index*")):
        try:
            if (index / "level").read_text().strip() == "1" and (index / "type").read_text().strip() == "Data":
                return int((index / "ways_of_associativity").read_text())
        except (OSError, ValueError):
            return None
    return None


def derived(l2=None):
    """(MC, NC) for this L2 size: MC a multiple of MR; NC the same on every CPU (see above)."""
    l2 = l2 or DEFAULT_L2
    return max(MR, l2 // 8 // (KC * 4) // MR * MR), PANEL_COLUMNS


def few_rows_columns(l2=None):
    """FEW_NC: a KC x FEW_NC slice of B takes half of L2 (a multiple of 128 columns)."""
    return max(128, (l2 or DEFAULT_L2) // 2 // (KC * 4) // 128 * 128)


def cpu_model():
    """The core's microarchitecture as LLVM names it (sapphirerapids, znver4, ...)."""
    return llvmlite.binding.get_host_cpu_name()


def saved_path():
    """Where `pyai tune --save` keeps its choice for this CPU model and vector width."""
    from pyai.kernels.numba_cpu.simd import WIDTH
    folder = pathlib.Path(os.environ.get("PYAI_CACHE_DIR") or
                          pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "pyai")
    key = hashlib.sha256(f"{cpu_model()} width {WIDTH} mr {MR}".encode()).hexdigest()[:16]
    return folder / f"blocking-{key}.json"


def saved():
    """(MC, NC) saved by `pyai tune --save` for this CPU, or None (a file that does not read as
    two sane sizes counts as none)."""
    try:
        choice = json.loads(saved_path().read_text())
        mc, nc = int(choice["mc"]), int(choice["nc"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if mc % MR or not 0 < mc <= 4096 or not 0 < nc <= 65536:
        return None
    return mc, nc


def save(mc, nc):
    path = saved_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"cpu": cpu_model(), "mc": mc, "nc": nc}))
    os.replace(temporary, path)


def choose():
    """(MC, NC, where they came from) for this process."""
    choice = saved()
    if choice is not None:
        return (*choice, f"saved by pyai tune ({saved_path()})")
    l2 = l2_bytes()
    l2_source = f"a {l2 >> 10} KB L2" if l2 else "an assumed 1 MB L2"
    source = f"MC derived from {l2_source}, NC {PANEL_COLUMNS} on every CPU"
    return (*derived(l2), source)


MC, NC, SOURCE = choose()
FEW_NC = few_rows_columns(l2_bytes())
