"""The `svd` process restarts itself once with huge-page-backed malloc (svdcli/runtime/hugepages.py)."""

import os
import subprocess
import sys

import pytest

from svdcli.runtime.hugepages import TUNABLE, restart_environment


def test_the_tunable_is_added_once_and_other_tunables_are_kept():
    env = restart_environment({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, supported=True)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{TUNABLE}=1"}
    assert restart_environment(env, supported=True) is None  # the restarted process does not restart again
    assert restart_environment({}, supported=True) == {"GLIBC_TUNABLES": f"{TUNABLE}=1"}


def test_no_restart_when_turned_off_unsupported_or_set_by_the_user():
    assert restart_environment({"SVD_HUGEPAGES": "0"}, supported=True) is None
    assert restart_environment({}, supported=False) is None
    assert restart_environment({"GLIBC_TUNABLES": f"{TUNABLE}=0"}, supported=True) is None  # the user's choice


def _run(code: str, **env) -> subprocess.CompletedProcess:
    child = "import os, sys; print(os.getpid(), os.environ.get('GLIBC_TUNABLES')); sys.exit(3)"
    script = (f"import os, sys\nfrom svdcli.runtime.hugepages import restart_with_hugepages\nprint(os.getpid(), flush=True)\n"
              f"restart_with_hugepages([sys.executable, '-c', {child!r}])\n{code}")
    clean = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SVD_HUGEPAGES")}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**clean, **env})


@pytest.mark.skipif(restart_environment({}) is None, reason="no glibc >= 2.35 with transparent huge pages here")
def test_the_restart_keeps_the_process_and_its_exit_code():
    r = _run("print('not restarted')")
    before, (after, tunables) = r.stdout.split()[0], r.stdout.split()[1:]
    assert r.returncode == 3 and before == after  # exec: same PID, the restarted command's exit code
    assert tunables == f"{TUNABLE}=1"
    off = _run("print('not restarted')", SVD_HUGEPAGES="0")
    assert off.returncode == 0 and off.stdout.split()[1:] == ["not", "restarted"]
