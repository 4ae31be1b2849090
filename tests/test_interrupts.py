"""An interrupt (Ctrl-C, or SIGTERM from a scheduler or `timeout`) anywhere in a command is one line on stderr and
exit 130, never a traceback: from the first import of the process to the command's last line."""

import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from svdcli.cli import app


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


# Each command, interrupted at the first library call of its body (before the part its old handler covered), and
# what its one line tells the user.
COMMANDS = [
    (["generate", "x.png", "--preset", "svd"], "svdcli.checkpoints.presets.load_preset", "no output was written"),
    (["batch", ".", "--out", "o", "--preset", "svd"], "svdcli.checkpoints.presets.load_preset",
     "finished items are kept, run the same command again to resume"),
    (["multiview", "x.png"], "svdcli.checkpoints.presets.load_preset", "no output was written"),
    (["4d", "x.mp4"], "svdcli.checkpoints.presets.load_preset", "no output was written"),
    (["train-lora", ".", "--motion", "zoom"], "svdcli.checkpoints.presets.load_preset",
     "run the same command with --resume to go on from the newest checkpoint"),
    (["interpolate", "x.mp4"], "svdcli.video.interpolate.read_source", "no output was written"),
    (["download", "svd"], "svdcli.checkpoints.download.download", "run the same command again to resume"),
    (["curate", "."], "svdcli.video.curate.curate", "no manifest was written"),
    (["eval", "x.mp4"], "svdcli.video.evaluate.evaluate", "nothing was written"),
    (["inspect", "x.safetensors"], "svdcli.runtime.devices.resolve_device", "nothing was written"),
    (["models"], "svdcli.checkpoints.presets.load_preset", "nothing was written"),
]


@pytest.mark.parametrize("args, where, says", COMMANDS, ids=[c[0][0] for c in COMMANDS])
def test_an_interrupt_anywhere_in_a_command_is_one_line_and_exit_130(args, where, says, monkeypatch, tmp_path):
    module, name = where.rsplit(".", 1)
    monkeypatch.setattr(f"{module}.{name}", interrupt)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, (result.exit_code, result.stderr, result.exception)
    assert result.stderr == f"svd: error: interrupted; {says}\n"
    assert isinstance(result.exception, SystemExit)  # not the KeyboardInterrupt itself
    assert os.listdir(tmp_path) == []


def test_sigterm_before_the_command_starts_is_one_line_and_exit_130(tmp_path):
    # The process sends itself SIGTERM where `svd` restarts itself with huge pages: after the handler is installed,
    # before the commands are imported. Without the handler this is a death by signal (-15); with it uncaught, a
    # traceback and -2.
    code = ("import os, signal, sys\n"
            "import svdcli.__main__ as entry, svdcli.runtime.hugepages as h\n"
            "h.restart_with_hugepages = lambda argv: os.kill(os.getpid(), signal.SIGTERM)\n"
            "sys.argv = ['svd', 'models']\n"
            "entry.main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 130 and proc.stderr == "svd: error: interrupted\n", (proc.returncode, proc.stderr)


LOST_IN_A_CALLBACK = """
import os, signal, weakref
from svdcli.runtime.interrupts import interrupt_on_sigterm, interrupted
interrupt_on_sigterm()

class Thing:
    pass

def callback(ref):  # Python drops what is raised here ("Exception ignored in ...")
    os.kill(os.getpid(), signal.{sig})
    sum(range(1000))  # the handler runs within these bytecodes, in the callback

thing = Thing()
ref = weakref.ref(thing, callback)
try:
    del thing
    total = sum(i for i in range(10 ** 7))
    print("went on", interrupted())
except KeyboardInterrupt as e:
    print(type(e).__name__, interrupted())
"""


@pytest.mark.parametrize("sig, raised", [("SIGTERM", "Terminated"), ("SIGINT", "KeyboardInterrupt")])
def test_an_interrupt_raised_where_python_drops_exceptions_is_delivered_again(sig, raised):
    # SIGINT at its default, whatever this process inherited: a shell's background job starts with it ignored, and
    # Python (and svd) then leave it ignored
    r = subprocess.run([sys.executable, "-c", LOST_IN_A_CALLBACK.format(sig=sig)], capture_output=True, text=True,
                       timeout=120, start_new_session=True,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert r.stdout.split() == [raised, "True"], r.stdout + r.stderr
    assert r.stderr == ""  # no "Exception ignored" line


def test_an_error_after_an_interrupt_is_reported_as_the_interrupt(tmp_path):
    """Under torchrun a worker can see a peer's broken collective before its own SIGTERM is raised: the command
    then ends as interrupted, in one line and with 130, not with the collective's traceback."""
    script = tmp_path / "run.py"
    script.write_text("""
import os, signal, sys
from svdcli.runtime.interrupts import interrupt_on_sigterm
interrupt_on_sigterm()
from svdcli.cli.app import app, command
import svdcli.runtime.interrupts as interrupts

@command("nothing to resume", name="fake")
def fake():
    interrupts._received.append(signal.SIGTERM)  # as if the handler had run where its exception was lost
    raise RuntimeError("Connection closed by peer")

@command("unused", name="other")
def other():
    raise RuntimeError("a plain error")

app(prog_name="svd", args=sys.argv[1:])
""")
    r = subprocess.run([sys.executable, str(script), "fake"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 130 and r.stderr.strip().splitlines() == ["svd: error: interrupted; nothing to resume"], \
        r.stderr
    r = subprocess.run([sys.executable, str(script), "other"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "RuntimeError: a plain error" in r.stderr  # without an interrupt: an error as ever
