"""`svd bench` at a tiny configuration: the real engine in each configuration, its table and JSON, exact offload
modes, recommendations, and one-line refusals."""

import json

import pytest
from typer.testing import CliRunner

from svdcli.inference.bench import GIB, BenchConfig, BenchError, Phase, Report, Row, recommend
from svdcli.cli import app
from svdcli.checkpoints.saving import save_single_file

from .conftest import tiny_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.safetensors"
    save_single_file(tiny_model("svd", seed=2), path)
    return path


def test_bench_prints_its_table_and_writes_its_json(weights, tmp_path):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(app, ["bench", "--preset", "svd", "--weights", str(weights), "--size", "128x64",
                                 "--frames", "4", "--steps", "3", "--device", "cpu", "--json", str(out),
                                 "--configs", "none:fp32:fp32,model:fp32:fp32", "--configs", "sequential:fp32:fp32",
                                 "--configs", "none:fp8:fp32", "--compare-diffusers"])
    assert r.exit_code == 0, r.stderr
    assert "svd bench on cpu" in r.stdout and "fastest: " in r.stdout
    report = json.loads(out.read_text())
    rows = {row["config"]: row for row in report["rows"]}
    assert list(rows) == ["none:fp32:fp32", "model:fp32:fp32", "sequential:fp32:fp32", "none:fp8:fp32"]
    assert all(row["status"] == "ok" for row in rows.values())
    for name in ("model:fp32:fp32", "sequential:fp32:fp32"):
        assert rows[name]["max_diff"] == 0.0  # offloading moves weights, never changes a frame
    assert 0 < rows["none:fp8:fp32"]["max_diff"] < 0.5  # 1-byte weights: close, not equal
    for row in rows.values():
        assert set(row["phases"]) == {"encode", "sample", "decode"}
        assert row["step_s"] > 0 and row["step_tflops"] > 0 and row["decode_chunk"] == 4
        assert row["estimate_s"] == pytest.approx(row["phases"]["encode"]["seconds"] + 25 * row["step_s"] +
                                                  row["phases"]["decode"]["seconds"], rel=1e-3)
        assert row["phases"]["decode"]["allocated_gib"] > row["phases"]["encode"]["allocated_gib"] > 0
    # fp8 storage holds the U-Net's and image encoder's matrices in a quarter of fp32's bytes (the VAE stays fp32)
    assert rows["none:fp8:fp32"]["phases"]["encode"]["allocated_gib"] < \
        0.8 * rows["none:fp32:fp32"]["phases"]["encode"]["allocated_gib"]
    assert report["fastest"] in rows and report["settings"]["frames"] == 4
    diffusers = report["diffusers"]
    assert diffusers["status"] == "ok" and diffusers["config"] == "none:fp32:fp32" and diffusers["step_ratio"] > 0


def test_random_weights_of_the_presets_architecture_need_no_file(tmp_path):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(app, ["bench", "--preset", "demo", "--steps", "2", "--frames", "2", "--size", "128x64",
                                 "--configs", "none:fp32:fp32", "--json", str(out), "--quiet"])
    assert r.exit_code == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["settings"]["weights"] == "random" and report["rows"][0]["status"] == "ok"


def test_recommendations_are_the_fastest_overall_and_within_each_budget():
    def row(name, seconds, peak_gib):
        r = Row(BenchConfig.parse(name), estimate_s=seconds)
        r.phases = {"sample": Phase(1.0, int(peak_gib * GIB * 0.9), int(peak_gib * GIB))}
        return r

    report = Report("test", {}, [row("none:bf16:bf16", 10, 20), row("model:bf16:bf16", 12, 11),
                                 row("sequential:fp8:bf16", 30, 5), Row(BenchConfig.parse("none:fp16:fp16"),
                                                                        status="out of memory")])
    recommend(report, total_memory=24 * GIB)
    assert report.fastest == "none:bf16:bf16"
    assert report.within_budget == {"6 GB": "sequential:fp8:bf16", "8 GB": "sequential:fp8:bf16",
                                    "12 GB": "model:bf16:bf16", "16 GB": "model:bf16:bf16",
                                    "24 GB": "none:bf16:bf16"}


@pytest.mark.parametrize("args, says", [
    (["--configs", "none:fp32"], "expected OFFLOAD:WEIGHTS:DTYPE"),
    (["--configs", "fast:fp32:fp32"], "offload fast"),
    (["--configs", "none:int4:fp32"], "weights int4"),
    (["--configs", "none:fp32:fp8"], "dtype fp8"),
    (["--steps", "1"], "steps must be at least 2"),
    (["--vram", "8", "--device", "cpu"], "vram"),
    (["--size", "100x64"], "multiples of 64"),
    (["--preset", "nope"], "unknown preset"),
    (["--weights", "/no/such.safetensors"], "no such file"),
])
def test_bad_bench_input_is_one_line_and_exit_2(args, says):
    r = CliRunner().invoke(app, ["bench", "--device", "cpu", *args])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


def test_configurations_parse_and_name_themselves():
    c = BenchConfig.parse("sequential:fp8:bf16:compile")
    assert (c.offload, c.weights_dtype, c.dtype, c.compile) == ("sequential", "fp8", "bf16", True)
    assert c.name == "sequential:fp8:bf16:compile"
    with pytest.raises(BenchError):
        BenchConfig.parse("none:fp8:bf16:fast")


def test_the_prepared_gpu_check_runs_every_part_at_a_tiny_size(tmp_path):
    """bench/gpu-check.sh in its smoke mode: the steps a lent GPU will run, on this machine, each one exiting 0."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SVD_CHECK_SMOKE": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(root / "bench" / "gpu-check.sh")], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    log = (tmp_path / "log.txt").read_text()
    assert log.count(": exit 0") == 3 and "exit 1" not in log and log.rstrip().endswith("done"), log
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [row["status"] for row in report["rows"]] == ["ok"] * 4
    assert "peak" in (tmp_path / "train-fp16.txt").read_text()
