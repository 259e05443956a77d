"""The Python package against the real pipeline: the import's torch check, results in order
and equal to the program's, keyword errors, and a stop that leaves a playable file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIKES = ROOT / "samples" / "bikes.mp4"
MODEL = ROOT / "models" / "efficientnet_lite0.pt"
PROGRAM = ROOT / "target" / "release" / "gradcam-stream"


@pytest.fixture(autouse=True)
def at_the_root(monkeypatch):
    # The program's defaults (models/…) are relative to the repository, as for the CLI.
    monkeypatch.chdir(ROOT)


def test_import_checks_the_torch_version(tmp_path):
    import torch

    import gradcam_stream as gs

    assert torch.__version__.startswith(gs.TORCH)
    assert gs._native.torch_version().startswith(gs.TORCH)
    # Another torch: a stand-in package earlier on the path (no second real torch here).
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("__version__ = '2.10.0+cpu'\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    o = subprocess.run([sys.executable, "-c", "import gradcam_stream"], env=env,
                       capture_output=True, text=True)
    assert o.returncode == 1, o.stderr
    last = o.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: gradcam_stream was built for torch 2.11.0"), o.stderr
    assert "torch 2.10.0+cpu" in last, last
    assert "Segmentation" not in o.stderr


def test_results_come_in_order_and_equal_the_programs(tmp_path):
    import gradcam_stream as gs

    meta = tmp_path / "cli.jsonl"
    o = subprocess.run([str(PROGRAM), "--input", str(BIKES), "--output", "null", "--model", str(MODEL),
                        "--metadata", str(meta), "--progress", "none", "--layout", "channels-last",
                        "--precision", "fp32"], capture_output=True, text=True)
    assert o.returncode == 0, o.stderr
    cli = [json.loads(l) for l in meta.read_text().splitlines()]
    results = list(gs.explain(BIKES, model=MODEL, layout="channels-last", precision="fp32"))
    assert [r.index for r in results] == list(range(250))
    assert len(cli) == 250
    for r, c in zip(results, cli):
        assert r.stream == 0
        assert r.cam.dtype.is_floating_point and r.cam.dim() == 2
        assert 0.0 <= float(r.cam.min()) and float(r.cam.max()) <= 1.0 + 1e-6
        assert c["frame"] == r.index
        assert [t[0] for t in r.top] == [t["id"] for t in c["topk"]], r.index
        assert abs(r.top[0][2] - c["topk"][0]["probability"]) < 1e-5
        assert r.target[0] == c["class"]
        # The same map as the program's metadata carries.
        assert [r.cam.shape[0], r.cam.shape[1]] == [c["cam"]["h"], c["cam"]["w"]]
        assert max(abs(a - b) for a, b in zip(r.cam.flatten().tolist(), c["cam"]["data"])) < 1e-5
    pts = [r.pts for r in results]
    assert pts == sorted(pts)


def test_frames_are_handed_over_when_asked(tmp_path):
    import gradcam_stream as gs

    r = next(iter(gs.explain(BIKES, frames=True, max_frames=8)))
    assert r.image is not None and tuple(r.image.shape) == (272, 640, 3)
    r = next(iter(gs.explain(BIKES, max_frames=8)))
    assert r.image is None


def test_keyword_and_value_errors_are_one_line_and_write_nothing(tmp_path):
    import gradcam_stream as gs

    out = tmp_path / "o.mp4"
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'colour'; did you mean 'colormap'\?"):
        gs.explain(BIKES, output=out, colour="jet")
    with pytest.raises(ValueError, match="batch"):
        gs.explain(BIKES, output=out, batch_size=0)
    with pytest.raises((ValueError, RuntimeError)) as e:
        list(gs.explain(tmp_path / "missing.mp4", output=out))
    assert "\n" not in str(e.value)
    assert not out.exists()


def test_a_stop_after_20_results_finalizes_the_file_and_another_run_starts(tmp_path):
    import gradcam_stream as gs

    out = tmp_path / "stopped.mp4"
    seen = 0
    with pytest.raises(KeyboardInterrupt):
        with gs.explain(BIKES, output=out) as run:
            for r in run:
                seen += 1
                if seen == 20:
                    raise KeyboardInterrupt
    assert out.exists()
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                            "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(out)],
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    frames = int(probe.stdout.strip())
    assert 20 <= frames < 250, frames
    again = list(gs.explain(BIKES, max_frames=16))
    assert len(again) == 16
