"""Huge-page-backed malloc for the `svd` process (Linux with glibc ≥ 2.35 and transparent huge pages available).

Why: on the CPU, every large tensor (a decoder activation of 8 frames × 128 channels × 128×128 is 64 MB) is a fresh
mmap that the kernel fills one zeroed 4 KiB page at a time; those page faults were 30% of a decode on the CPU box
(docs/speed.md). glibc's `glibc.malloc.hugetlb=1` tunable asks for transparent huge pages on those blocks, 512×
fewer faults, with the same peak memory. glibc reads tunables only at process start, so the command restarts itself
once with the tunable added to GLIBC_TUNABLES. Results do not change (only where memory comes from); SVD_HUGEPAGES=0
turns it off. No torch import here: the restart happens before anything heavy is loaded.
"""

import os
import platform
import sys
from collections.abc import Mapping

TUNABLE = "glibc.malloc.hugetlb"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_supports_it() -> bool:
    name, version = platform.libc_ver()
    try:
        return name == "glibc" and tuple(int(x) for x in version.split(".")[:2]) >= (2, 35)
    except ValueError:
        return False


def _kernel_offers_thp() -> bool:
    try:
        with open(THP_SETTING) as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def restart_environment(env: Mapping[str, str], supported: bool | None = None) -> dict[str, str] | None:
    """The environment to restart with, or None when nothing would change: not Linux/glibc ≥ 2.35 or no THP
    (supported=False), the tunable already set (also what stops a second restart), or SVD_HUGEPAGES=0."""
    if supported is None:
        supported = sys.platform == "linux" and _glibc_supports_it() and _kernel_offers_thp()
    tunables = env.get("GLIBC_TUNABLES", "")
    if not supported or env.get("SVD_HUGEPAGES", "1") == "0" or TUNABLE in tunables:
        return None
    return {**env, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, f"{TUNABLE}=1"]))}


def restart_with_hugepages(argv: list[str]) -> None:
    """Replace this process with `argv` run under the huge-page tunable (same PID, stdio and exit code); returns
    only when no restart is needed or possible."""
    env = restart_environment(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(argv[0], argv, env)
    except OSError:
        return  # carry on with the default allocator
