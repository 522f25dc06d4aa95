"""Build cuda_src/ for the host emulation (cuda_runtime.h here) into a shared library.

    python tests/cuda_emu/build.py [--sanitize] [OUT.so]

Each `kernel<<<grid, block, shared, stream>>>(args)` is rewritten to
`emu_launch(EMU_CONFIG(grid, block, shared, stream), kernel, args)`, the .cu files are compiled
as C++20 with g++, and linked with the scheduler (emu_runtime.cpp) and the C entry points
(wrappers.cpp). Objects are cached by the hash of their source and flags in a folder under the
temporary directory, so a second build of the same sources only links, and a build that changes
one file (the planted-bug tests) recompiles that file only.
"""

import concurrent.futures
import hashlib
import os
import pathlib
import re
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
CUDA_SRC = HERE.parents[1] / "cuda_src"
CACHE = pathlib.Path(tempfile.gettempdir()) / f"pyai-cuda-emu-{os.getuid()}"
BASE_FLAGS = ["-std=c++20", "-O1", "-g1", "-fPIC", "-Wall", "-Wno-unused-function", "-Wno-unknown-pragmas"]
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
EMULATOR_FILES = ("cuda_runtime.h", "cuda_bf16.h", "cuda_pipeline.h", "mma.h", "emu_runtime.cpp", "wrappers.cpp")
LAUNCH = re.compile(r"(\w+(?:<[^<>;]*>)?)<<<([^>]*)>>>\(")


def translate(text):
    """CUDA launch syntax to a call of the emulator's emu_launch."""
    return LAUNCH.sub(lambda match: f"emu_launch(EMU_CONFIG({match.group(2)}), {match.group(1)}, ", text)


def sources(changes=None):
    """{file name: C++ text}: cuda_src's .cu files translated, its headers, the emulator's files.
    `changes` {file name: (old, new)} replaces one exact piece of text (which must be there)."""
    files = {path.name: path.read_text() for path in sorted(CUDA_SRC.glob("*.cu*"))}
    for name, (old, new) in (changes or {}).items():
        if files[name].count(old) != 1:
            raise ValueError(f"{name}: expected the text to change once, found it {files[name].count(old)} times")
        files[name] = files[name].replace(old, new)
    files = {(name[:-3] + ".cpp" if name.endswith(".cu") else name): translate(text) for name, text in files.items()}
    files.update({name: (HERE / name).read_text() for name in EMULATOR_FILES})
    return files


def digest(*parts):
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def build(sanitize=False, changes=None):
    """The path of the shared library for these sources and flags (built, or found in the cache)."""
    files = sources(changes)
    flags = BASE_FLAGS + (SANITIZE_FLAGS if sanitize else [])
    headers = digest(*(name + text for name, text in sorted(files.items()) if not name.endswith(".cpp")))
    source_dir = CACHE / ("src-" + digest(headers, *(name + text for name, text in sorted(files.items()))))
    source_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write_atomically(source_dir / name, text)
    units = sorted(name for name in files if name.endswith(".cpp"))
    objects = [CACHE / f"{pathlib.Path(name).stem}-{digest(headers, files[name], *flags)}.o" for name in units]
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(lambda job: compile_unit(source_dir / job[0], job[1], flags), zip(units, objects)))
    library = CACHE / f"emu-{digest(*map(str, objects), *flags)}.so"
    if not library.exists():
        temporary = library.with_suffix(f".{os.getpid()}.tmp")
        run(["g++", "-shared", "-pthread", *flags, *map(str, objects), "-o", str(temporary)])
        os.replace(temporary, library)
    return library


def compile_unit(source, target, flags):
    if target.exists():
        return
    temporary = target.with_suffix(f".{os.getpid()}.tmp")
    run(["g++", *flags, "-pthread", f"-I{HERE}", f"-I{source.parent}", "-c", str(source), "-o", str(temporary)])
    os.replace(temporary, target)


def run(command):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:1] + command[-3:])} failed:\n{result.stderr[-4000:]}")


def write_atomically(path, text):
    if path.exists() and path.read_text() == text:
        return
    temporary = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def sanitizer_preload():
    """LD_PRELOAD for a Python process that loads a sanitized build: the ASan runtime must come first."""
    return subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True,
                          check=True).stdout.strip()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    sanitize = "--sanitize" in arguments
    arguments = [a for a in arguments if a != "--sanitize"]
    path = build(sanitize)
    if arguments:
        pathlib.Path(arguments[0]).write_bytes(path.read_bytes())
    print(arguments[0] if arguments else path)
