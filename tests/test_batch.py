"""`svd batch`: inputs, stable seeds and shards, resume after SIGKILL, failures, manifest."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from svdcli.inference.batch import BatchError, in_shard, item_seed, read_items
from svdcli.checkpoints.saving import save_single_file

from .conftest import tiny_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_single_file(tiny_model("svd", seed=4), path)
    return path


def make_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        a = np.full((64, 96, 3), 40 * i, np.uint8)
        a[10:30, 20 + 5 * i:50 + 5 * i] = 255
        (folder / n).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(folder / n)


def batch(weights, *args, cwd=None):
    cmd = [sys.executable, "-m", "svdcli", "batch", *args, "--weights", str(weights), "--preset", "svd", "--size",
           "128x64", "--frames", "2", "--steps", "1", "--quiet"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)


def test_folder_and_job_files(tmp_path):
    make_images(tmp_path / "in", ["a.png", "b.jpg", "sub/c.png"])
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    assert [i.key for i in read_items(tmp_path / "in")] == ["a.png", "b.jpg"]
    assert [i.key for i in read_items(tmp_path / "in", recursive=True)] == ["a.png", "b.jpg", "sub/c.png"]
    (tmp_path / "jobs.txt").write_text("# a comment\nin/b.jpg\n\nin/a.png\n")
    assert [i.image for i in read_items(tmp_path / "jobs.txt")] == [tmp_path / "in/b.jpg", tmp_path / "in/a.png"]
    (tmp_path / "jobs.csv").write_text("image,frames,motion,loop,name\nin/a.png,3,200,true,x.mp4\nin/b.jpg,,,,\n")
    a, b = read_items(tmp_path / "jobs.csv")
    assert a.overrides == {"frames": 3, "motion": 200, "loop": True, "name": "x.mp4"} and b.overrides == {}
    (tmp_path / "jobs.jsonl").write_text('{"image": "in/a.png", "seed": 5, "noise_aug": 0.1}\n')
    assert read_items(tmp_path / "jobs.jsonl")[0].overrides == {"seed": 5, "noise_aug": 0.1}
    for text, match in (("image,colour\nin/a.png,red\n", "unknown setting 'colour'"),
                        ("image,frames\nin/a.png,many\n", "'frames' must be int")):
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(BatchError, match=match):
            read_items(tmp_path / "bad.csv")


def test_seeds_and_shards_do_not_depend_on_order_or_other_items():
    keys = [f"clip_{i:03d}.png" for i in range(200)]
    seeds = {k: item_seed(7, k) for k in keys}
    assert {k: item_seed(7, k) for k in reversed(keys)} == seeds
    assert len(set(seeds.values())) == len(keys) and item_seed(8, keys[0]) != seeds[keys[0]]
    shards = [{k for k in keys if in_shard(k, i, 3)} for i in range(3)]
    assert set().union(*shards) == set(keys) and sum(len(s) for s in shards) == len(keys)  # complete, disjoint
    assert all(40 < len(s) < 95 for s in shards)  # roughly even


def test_batch_runs_resumes_and_isolates_a_bad_item(weights, tmp_path):
    make_images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG not really")
    r = batch(weights, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--json")
    assert r.returncode == 1  # one item failed
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert Counter(x["status"] for x in lines) == {"done": 3, "failed": 1}
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == ["a.mp4", "b.mp4", "c.mp4"]
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.mp4")}
    r = batch(weights, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--json")
    assert Counter(json.loads(line)["status"] for line in r.stdout.splitlines()) == {"skipped": 3, "failed": 1}
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.mp4")} == before  # nothing redone
    r = batch(weights, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--force", "--json")
    assert Counter(json.loads(line)["status"] for line in r.stdout.splitlines())["done"] == 3


def test_job_file_overrides_and_name_template(weights, tmp_path):
    make_images(tmp_path, ["a.png", "b.png"])
    (tmp_path / "jobs.csv").write_text("image,frames,seed,format\na.png,3,11,gif\nb.png,,,\n")
    r = batch(weights, str(tmp_path / "jobs.csv"), "--out", str(tmp_path / "out"), "--name", "{stem}_{seed}.{ext}")
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "out" / "a_11.gif") as im:
        assert im.n_frames == 3
    b = [p.name for p in (tmp_path / "out").glob("b_*.mp4")]
    assert b == [f"b_{item_seed(0, 'b.png')}.mp4"]


def test_sigkill_mid_batch_then_rerun_gives_each_output_once(weights, tmp_path):
    names = [f"img{i}.png" for i in range(6)]
    make_images(tmp_path / "in", names)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "svdcli", "batch", str(tmp_path / "in"), "--out", str(out), "--weights",
           str(weights), "--preset", "svd", "--size", "128x64", "--frames", "2", "--steps", "12", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "manifest.jsonl").exists():
        time.sleep(0.2)
    time.sleep(0.7)  # likely in the middle of the next item
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = len(list(out.glob("*.json")))
    assert 1 <= finished_before < len(names)
    r = batch(weights, str(tmp_path / "in"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.mp4")) == [n.replace(".png", ".mp4") for n in names]
    assert not [p for p in out.iterdir() if "partial" in p.name]
    done = [rec["output"] for rec in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())
            if rec["status"] == "done"]
    assert sorted(done) == sorted(str(p) for p in out.resolve().glob("*.mp4"))  # exactly one line per output


def test_shards_split_the_batch_disjointly_and_completely(weights, tmp_path):
    names = [f"s{i}.png" for i in range(5)]
    make_images(tmp_path / "in", names)
    produced = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        r = batch(weights, str(tmp_path / "in"), "--out", str(out), "--shard", f"{i}/2")
        assert r.returncode in (0, 2), r.stderr  # a shard may be empty (exit 2 with a message)
        produced.append({p.name for p in out.glob("*.mp4")} if out.exists() else set())
    assert produced[0].isdisjoint(produced[1])
    assert produced[0] | produced[1] == {n.replace(".png", ".mp4") for n in names}
    assert batch(weights, str(tmp_path / "in"), "--out", str(tmp_path / "x"), "--shard", "2/2").returncode == 2


def test_torchrun_environment_picks_the_same_share_as_shard(weights, tmp_path):
    names = [f"r{i}.png" for i in range(5)]
    make_images(tmp_path / "in", names)
    by_flag = batch(weights, str(tmp_path / "in"), "--out", str(tmp_path / "a"), "--shard", "1/2")
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}  # as torchrun sets them (CPU: stays CPU)
    cmd = [sys.executable, "-m", "svdcli", "batch", str(tmp_path / "in"), "--out", str(tmp_path / "b"), "--weights",
           str(weights), "--preset", "svd", "--size", "128x64", "--frames", "2", "--steps", "1", "--quiet"]
    by_env = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert by_flag.returncode == by_env.returncode, by_env.stderr
    outputs = [sorted(p.name for p in (tmp_path / d).glob("*.mp4")) if (tmp_path / d).exists() else []
               for d in "ab"]
    assert outputs[0] == outputs[1]
