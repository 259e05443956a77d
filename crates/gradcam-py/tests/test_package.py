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
    run = gs.explain(BIKES, model=MODEL, layout="channels-last", precision="fp32", progress=False)
    assert run.summary() is None  # not before the end
    results = list(run)
    assert [r.index for r in results] == list(range(250))
    s = run.summary()
    assert s["frames"] == 250 and s["streams"] == [
        {"name": "0", "frames": 250, "dropped": 0, "undecoded": 0, "reconnects": 0}], s
    assert (s["precision"], s["layout"], s["batch_size"], s["device"]) == ("fp32", "channels-last", 8, "cpu"), s
    assert s["model"] == "efficientnet-lite0" and s["fps"] > 0 and s["dropped"] == 0, s
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


def raw_frames(video, out):
    """The frames as GStreamer decodes them (RGBx), as the program sees them."""
    subprocess.run(["gst-launch-1.0", "-q", "uridecodebin", f"uri=file://{video}", "!", "videoconvert", "!",
                    "video/x-raw,format=RGBx", "!", "filesink", f"location={out}"], check=True)
    import numpy as np

    return np.fromfile(out, dtype=np.uint8).reshape(-1, 272, 640, 4)[..., :3]


def seeded_resnet18():
    import torch
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.mark.parametrize("method,n", [("gradcam", 250), ("gradcam++", 250)])
def test_a_live_module_matches_pytorch_grad_cam_and_its_own_softmax(tmp_path, method, n):
    """Grad-CAM and Grad-CAM++ over the whole clip."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import gradcam_stream as gs

    sys.path.insert(0, str(ROOT / "tests"))
    import map_check

    net = seeded_resnet18()
    out = tmp_path / "live.mp4"
    results = list(gs.explain(BIKES, model=net, layer=net.layer4, method=method, output=out,
                              precision="fp32", layout="contiguous", max_frames=n))
    assert [r.index for r in results] == list(range(n))
    assert net.training is False and net.relu.inplace is True  # the caller's module as it was
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames", "-of", "csv=p=0", str(out)], capture_output=True, text=True)
    assert probe.stdout.strip() == str(n), probe.stderr

    frames = raw_frames(BIKES, tmp_path / "raw")
    assert len(frames) == 250
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    cam = (GradCAM if method == "gradcam" else GradCAMPlusPlus)(model=net, target_layers=[net.layer4])
    corrs = []
    for start in range(0, n, 8):
        batch = results[start:start + 8]
        x = torch.from_numpy(frames[start:start + 8].copy()).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        x = (x / 255 - mean) / std
        with torch.no_grad():
            probs = net(x).softmax(1)
        for r, p in zip(batch, probs):
            want = p.topk(len(r.top))
            assert [t[0] for t in r.top] == want.indices.tolist(), r.index
            assert max(abs(t[2] - q) for t, q in zip(r.top, want.values.tolist())) < 1e-4, r.index
        refs = cam(input_tensor=x, targets=[ClassifierOutputTarget(r.target[0]) for r in batch])
        for r, ref in zip(batch, refs):
            mine = map_check.ours({"cam": {"h": r.cam.shape[0], "w": r.cam.shape[1],
                                           "data": r.cam.flatten().tolist()}}, (224, 224))
            corrs.append(map_check.compare(ref, mine)[0])
    worst = int(np.argmin(corrs))
    assert corrs[worst] >= 0.99, f"frame {worst} correlates {corrs[worst]:.4f} with pytorch-grad-cam"


def test_a_live_module_with_a_bad_layer_is_one_line(tmp_path):
    import torch

    import gradcam_stream as gs

    net = seeded_resnet18()
    out = tmp_path / "o.mp4"
    with pytest.raises(ValueError, match=r"^layer='layer9' is not a layer of this model; valid layers: conv1, .*"
                                         r"did you mean 'layer4'\?$"):
        gs.explain(BIKES, model=net, layer="layer9", output=out)
    with pytest.raises(ValueError, match="^layer='fc' gives a 2-D output"):
        gs.explain(BIKES, model=net, layer=net.fc, output=out)
    with pytest.raises(ValueError, match="not a submodule of the model"):
        gs.explain(BIKES, model=net, layer=torch.nn.Conv2d(3, 3, 1), output=out)
    with pytest.raises(TypeError, match="needs layer="):
        gs.explain(BIKES, model=net, output=out)
    assert not out.exists()


def test_maps_are_the_engines_own_tensors_not_copies():
    import torch

    import gradcam_stream as gs

    results = list(gs.explain(BIKES, max_frames=32, batch_size=8))
    assert len(results) == 32
    # A batch's maps are views of one table the engine made: frames share its storage, each at
    # its own row. A copy per frame would give each map a storage of its own.
    storages = {}
    for r in results:
        assert r.cam.dtype == torch.float32 and r.cam.dim() == 2 and not r.cam.requires_grad
        storages.setdefault(r.cam.untyped_storage().data_ptr(), []).append(r)
    assert len(storages) <= 32 // 2, f"{len(storages)} storages for 32 maps"
    for shared in storages.values():
        ptrs = sorted(r.cam.data_ptr() for r in shared)
        assert len(set(ptrs)) == len(ptrs), "two frames' maps at the same place"
    # Reading the maps later still gives each frame's own: the engine does not reuse the table.
    assert max(float((a.cam - b.cam).abs().max()) for a, b in zip(results, results[1:])) > 0


def test_maps_stay_on_the_gpu():
    import torch

    import gradcam_stream as gs

    if not torch.cuda.is_available():
        pytest.skip("skipped: no CUDA (a map computed on a GPU stays there: checked where there is one)")
    r = next(iter(gs.explain(BIKES, max_frames=8, device="cuda")))
    assert r.cam.device.type == "cuda"


def test_help_documents_every_keyword_and_show_plays_the_output(tmp_path, capsys):
    import gradcam_stream as gs

    doc = gs.explain.__doc__
    for name in gs._native.flag_names():
        if name not in ("input", "help", "version", "progress"):
            key = name.replace("-", "_") + ("_" if name == "class" else "")
            assert f"\n    {key}=" in doc, key
    assert "    device=auto|cpu|cuda\n" in doc and "[default: auto]" in doc
    assert "    batch_size=N\n" in doc and "[default: 8] (from 1 to" in doc, doc

    out = tmp_path / "shown.mp4"
    run = gs.explain(BIKES, output=out, max_frames=16)
    with pytest.raises(RuntimeError, match="still going"):
        run.show()
    assert len(list(run)) == 16
    # The progress bar (tqdm is installed here): 16 frames of the 250 the file has.
    assert "16/250" in capsys.readouterr().err
    html = run.show()._repr_html_()
    assert html.startswith('<video controls width="640" src="data:video/mp4;base64,AAAA')
    with pytest.raises(ValueError, match="needs a file output"):
        gs.explain(BIKES, max_frames=1, progress=False).show()


def test_a_slow_reader_makes_a_live_source_drop_and_count_frames():
    import time

    import gradcam_stream as gs

    # 30 frames a second from a live source, read at 5 a second: the queue to Python fills, the
    # pipeline behind it backs up, and the live source drops frames rather than fall behind.
    run = gs.explain("test://ball?size=160x120&fps=30", duration=6, max_latency_ms=500, progress=False)
    seen = 0
    for r in run:
        seen += 1
        time.sleep(0.2)
    s = run.summary()
    assert s["frames"] == seen, s
    assert s["dropped"] > 0 and s["frames"] + s["dropped"] > 100, s


def seeded_detector(kind):
    import torch

    torch.manual_seed(0)
    if kind == "ultralytics:yolov8n.yaml":
        from ultralytics import YOLO

        return YOLO("yolov8n.yaml", task="detect")
    import torchvision

    return torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)


@pytest.mark.parametrize("kind", ["ultralytics:yolov8n.yaml", "torchvision:ssdlite320_mobilenet_v3_large"])
def test_a_live_detector_gives_the_boxes_and_maps_of_its_export(tmp_path, kind):
    """The same seeded detector, live in Python and exported by scripts/export_model.py for the
    program: the same boxes, scores and maps frame by frame."""
    import torch

    import gradcam_stream as gs

    exported = tmp_path / "exported.pt"
    o = subprocess.run([str(ROOT / ".venv/bin/python"), "scripts/export_model.py", "--detector", kind,
                        "--weights", "random", "--out", str(exported)], capture_output=True, text=True)
    assert o.returncode == 0, o.stderr
    meta = tmp_path / "cli.jsonl"
    same = ["--max-frames", "12", "--score-threshold", "0", "--boxes", "3", "--precision", "fp32",
            "--layout", "contiguous"]
    o = subprocess.run([str(PROGRAM), "--input", str(BIKES), "--output", "null", "--model", str(exported),
                        "--metadata", str(meta), "--progress", "none", *same], capture_output=True, text=True)
    assert o.returncode == 0, o.stderr
    cli = [json.loads(l) for l in meta.read_text().splitlines()]

    net = seeded_detector(kind)
    weights = [p.detach().clone() for p in net.parameters()]
    results = list(gs.explain(BIKES, model=net, max_frames=12, score_threshold=0, boxes=3, precision="fp32",
                              layout="contiguous", progress=False))
    # The caller's model is not changed by the splitting (ultralytics' is made float, not in-place).
    assert all(torch.equal(a, b) for a, b in zip(weights, net.parameters()))
    assert [r.index for r in results] == list(range(12)) and len(cli) == 12
    for r, c in zip(results, cli):
        assert len(r.boxes) == len(c["boxes"]) == 3, r.index
        for b, d in zip(r.boxes, c["boxes"]):
            assert b["class_id"] == d["class"] and abs(b["score"] - d["score"]) < 1e-4, (r.index, b, d)
            assert max(abs(x - y) for x, y in zip(b["bbox"], d["box"])) < 0.5, (r.index, b, d)
        assert [r.cam.shape[0], r.cam.shape[1]] == [c["cam"]["h"], c["cam"]["w"]]
        assert max(abs(a - b) for a, b in zip(r.cam.flatten().tolist(), c["cam"]["data"])) < 1e-4, r.index


def test_a_live_detector_that_is_not_supported_is_one_line(tmp_path):
    import torchvision

    import gradcam_stream as gs

    out = tmp_path / "o.mp4"
    two_stage = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3)
    with pytest.raises(ValueError, match=r"^FasterRCNN is not a single-stage torchvision detector"):
        gs.explain(BIKES, model=two_stage, output=out)
    yolo = seeded_detector("ultralytics:yolov8n.yaml")
    with pytest.raises(TypeError, match="layer= is for a classifier"):
        gs.explain(BIKES, model=yolo, layer="model.9", output=out)
    with pytest.raises(ValueError, match=r"^model_size=\(384, 650\): a YOLO takes multiples of 32$"):
        gs.explain(BIKES, model=yolo, model_size=(384, 650), output=out)
    with pytest.raises(ValueError, match="classes= has 2 names; the detector has 80 classes"):
        gs.explain(BIKES, model=yolo, classes=["a", "b"], output=out)
    assert not out.exists()
