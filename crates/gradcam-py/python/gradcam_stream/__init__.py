"""gradcam-stream in Python: explain a video with a vision model, frame by frame, in-process.

    import gradcam_stream as gs

    run = gs.explain("samples/bikes.mp4", output="out.mp4", method="gradcam++")
    for r in run:
        print(r.index, r.pts, r.top[0], r.cam.shape)

Every keyword is a flag of the `gradcam-stream` program (`batch_size=8` is
`--batch-size 8`, `box=True` is `--box`): the same names, defaults, ranges and checks.
"""

import difflib
import importlib.util
import os

# The torch this package was built for. Its extension links that torch's libtorch, and a
# different torch in the same process would crash it: so the version is checked before the
# extension is loaded.
TORCH = "2.11.0"

try:
    import torch as _torch
except ImportError as e:  # pragma: no cover - torch is a dependency
    raise ImportError(f"gradcam_stream needs torch=={TORCH}: {e}") from None

_found = _torch.__version__.split("+")[0]
if _found != TORCH:
    raise ImportError(
        f"gradcam_stream was built for torch {TORCH} and this environment has torch "
        f"{_torch.__version__}; install torch=={TORCH} (or rebuild gradcam_stream against "
        f"torch {_found})"
    )

try:
    from . import _native  # noqa: E402  (after the torch check, on purpose)
except ImportError:
    if importlib.util.find_spec(f"{__name__}._native") is not None:
        raise
    # The source tree without its compiled part (scripts/export_model.py imports
    # gradcam_stream.split from there): splitting works, running does not.
    _native = None

__all__ = ["explain", "Run"]


def _flags(source, settings):
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not sources:
        raise ValueError("explain() needs a source: a file, a camera or an RTSP URL")
    flags = []
    for s in sources:
        flags += ["--input", os.fspath(s)]
    settings.setdefault("output", "null")
    settings.setdefault("progress", "none")  # the program's own bar is for terminals
    for key, value in settings.items():
        # `class_=` for `--class` (a Python keyword)
        flag = "--" + key.rstrip("_").replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            for v in value:
                flags += [flag, os.fspath(v) if isinstance(v, os.PathLike) else str(v)]
        else:
            flags += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return flags


def _keyword_error(line, settings):
    """The program's "unexpected argument '--colour'" as a keyword error."""
    words = [k for k in settings]
    bad = next((k for k in words if f"'--{k.replace('_', '-')}'" in line), None)
    if bad is None:
        return TypeError(line)
    known = [a.replace("-", "_") for a in _known_flags()]
    close = difflib.get_close_matches(bad, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return TypeError(f"explain() got an unexpected keyword argument {bad!r}{hint}")


def _known_flags():
    return _built().flag_names()


def _built():
    """The compiled extension, or an ImportError that says how to build it."""
    if _native is None:
        raise ImportError("gradcam_stream's compiled part is not built here: `make wheel`, then "
                          "`pip install target/wheels/gradcam_stream-*.whl`")
    return _native


class _Video:
    """A video file as Jupyter shows it: an HTML5 player with the file inline (base64)."""

    def __init__(self, path, width):
        self.path, self.width = os.fspath(path), int(width)

    def _repr_html_(self):
        import base64

        kind = "webm" if self.path.endswith(".webm") else "mp4"
        with open(self.path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        return (f'<video controls width="{self.width}" src="data:video/{kind};base64,{data}">'
                "</video>")

    def __repr__(self):
        return f"<video {self.path}>"


class Run:
    """A run in progress: iterate it for each frame's `Result` (`index`, `pts`, `stream`,
    `name`, `target`, `top`, `cam`, `boxes`, `image`). Iterating waits for the next result with
    the GIL released. `stop()` (and KeyboardInterrupt while iterating) stops the run as Ctrl-C
    stops the program: the frames in flight are written and every output is finalized."""

    def __init__(self, native, held=None, progress=True, outputs=()):
        self._native = native
        # A live model's split, written for the run to load: removed with the run.
        self._held = held
        self._outputs = list(outputs)
        self._bar = None
        self._progress = progress

    def __iter__(self):
        return self

    def __next__(self):
        try:
            r = next(self._native)
        except StopIteration:
            self._close_bar()
            raise
        self._tick()
        return r

    def _tick(self):
        """The progress bar: tqdm.auto's (a widget in a notebook, text elsewhere) where tqdm
        is installed and progress was not turned off; nothing otherwise."""
        if not self._progress:
            return
        if self._bar is None:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self._progress = False
                return
            self._bar = tqdm(total=self._native.expected, unit="frame", desc="gradcam-stream")
        self._bar.update(1)

    def _close_bar(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def stop(self):
        self._close_bar()
        self._native.stop()

    def show(self, width=640):
        """The output video, to display in Jupyter (the last expression of a cell): an HTML5
        player with the file embedded. Needs a finished run with a file output (`output=
        "out.mp4"`)."""
        files = [o for o in self._outputs if str(o).lower().endswith((".mp4", ".mkv", ".webm"))]
        if not files:
            raise ValueError("show() needs a file output: explain(..., output='out.mp4')")
        if not self.done:
            raise RuntimeError("the run is still going: show() plays the file once it is finished "
                               "(iterate to the end, or stop())")
        return _Video(files[0], width)

    def summary(self):
        """The totals the program prints at the end, as a dict: `frames`, `seconds`, `fps`,
        `device`, `model`, `precision`, `layout`, `batch_size`, `dropped`, `undecoded`,
        `reconnects`, and `streams` (each stream's `name`, `frames` and losses). None while
        the run goes on."""
        return self._native.summary()

    @property
    def done(self):
        return self._native.done

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def explain(source, *, model=None, layer=None, model_size=None, classes=None, frames=False,
            **settings):
    """Explain `source` (a file, `/dev/video0`, an RTSP URL, or a list of them, each optionally
    `NAME=`) and return a `Run` to iterate, one `Result` per frame.

    `model`: a live classifier (`torch.nn.Module`) with `layer=` (a module name such as
    `"layer4"`, or the submodule itself, `model.layer4`), split there in this process as
    scripts/export_model.py splits it; or a live single-stage detector (a torchvision
    RetinaNet, FCOS or SSD, or an ultralytics YOLO v8/11), explained on its pyramid levels with
    no `layer=`; or the path of an exported `.pt`; or nothing for the bundled EfficientNet-Lite0.
    A live model also takes `model_size=(h, w)`, the input it runs at (a classifier 224x224; a
    detector its fixed size, else 512x512 for torchvision's and 384x640 for a YOLO), and
    `classes=` (names; ImageNet's for 1000 scores, COCO's for torchvision's 91).

    `frames=True` adds each frame as shown (`Result.image`, uint8 [H, W, 3]). `progress=False`
    turns the progress bar off (tqdm's, where it is installed). With no `output=` nothing is
    written (`output="null"`); `output="out.mp4"` writes the video as the program does.

    Every other keyword is a flag of the program (`batch_size=8` is `--batch-size 8`,
    `box=True` is `--box`, `class_=` is `--class`; a list repeats the flag), with the same
    defaults, ranges and checks:
    """
    import torch

    from . import detectors

    held = None
    if isinstance(model, torch.nn.Module) and detectors.is_detector(model):
        if layer is not None:
            raise TypeError("layer= is for a classifier; a detector is explained on its pyramid "
                            "levels (its head's inputs)")
        held, model = _split_detector(model, model_size, classes)
    elif isinstance(model, torch.nn.Module):
        if layer is None:
            raise TypeError("explain() needs layer= with a live model: a module name ('layer4') "
                            "or the submodule (model.layer4)")
        held, model = _split(model, layer, model_size or (224, 224), classes)
    elif layer is not None:
        raise TypeError("layer= goes with a live model (model=module); an exported .pt names "
                        "its layer in its sidecar")
    if model is not None:
        settings["model"] = model
    progress = settings.pop("progress", True)
    if isinstance(progress, str):  # the program's own --progress modes, on stderr
        settings["progress"], progress = progress, False
    outputs = settings.get("output", [])
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    flags = _flags(source, dict(settings))
    try:
        native = _built().explain(flags, frames)
    except KeyError as e:
        raise _keyword_error(e.args[0], settings) from None
    return Run(native, held, progress, outputs)


def _split(module, layer, size, classes):
    """A live module split at `layer`, traced and written to a temporary folder that lives as
    long as the run: (the folder, the model's path)."""
    from . import split

    # Splitting puts the module in eval mode and turns in-place operations off; the traced copy
    # keeps that, the caller's module is given back as it was.
    training = module.training
    inplace = [(m, m.inplace) for m in module.modules() if isinstance(getattr(m, "inplace", None), bool)]
    try:
        net, meta = split.from_module(module, layer, size, classes)
        traced = split.trace(net, meta)
    except split.ExportError as e:
        raise ValueError(str(e).replace("--layer ", "layer=")) from None
    finally:
        module.train(training)
        for m, was in inplace:
            m.inplace = was
    return _held(traced, meta)


def _split_detector(module, size, classes):
    """A live detector split at its pyramid levels, traced and written like _split's model. The
    splitting may change the module (an ultralytics YOLO is made float and not in-place), so a
    copy is split and the caller's stays as it was."""
    import copy

    from . import detectors

    if type(module).__name__ == "YOLO":  # ultralytics' wrapper: its DetectionModel is the network
        module = module.model
    try:
        net, meta = detectors.from_module(copy.deepcopy(module), size)
        if classes is not None:
            if len(classes) != len(meta["classes"]):
                raise ValueError(f"classes= has {len(classes)} names; the detector has "
                                 f"{len(meta['classes'])} classes")
            meta["classes"] = [str(c) for c in classes]
        traced = detectors.trace(net, meta)
    except detectors.DetectorError as e:
        import re

        # The script's --size WxH is model_size=(h, w) here.
        raise ValueError(re.sub(r"--size (\d+)x(\d+)", r"model_size=(\2, \1)", str(e))) from None
    return _held(traced, meta)


def _held(traced, meta):
    """`traced` and its sidecar written to a temporary folder that lives as long as the run:
    (the folder, the model's path)."""
    import tempfile
    from pathlib import Path

    from . import split

    held = tempfile.TemporaryDirectory(prefix="gradcam-stream-")
    path = Path(held.name) / "model.pt"
    split.write(traced, meta, path)
    return held, path


def _keywords_doc():
    """The keywords section of explain's docstring, from the program's own declarations."""
    if _native is None:
        return "    (the compiled part is not built here: `gradcam-stream --help` lists them)\n"
    import textwrap

    out = []
    for name, value, help_, range_, allowed in _native.flag_help():
        if name in ("input", "help", "version", "progress"):
            continue
        key = name.replace("-", "_") + ("_" if name == "class" else "")
        head = f"{key}={value}" if value else f"{key}=True"
        more = []
        if allowed:
            more.append("one of " + ", ".join(allowed))
        if range_:
            more.append(f"from {range_}")
        text = " ".join(help_.split()) + (f" ({'; '.join(more)})" if more else "")
        out.append(f"    {head}\n" + textwrap.fill(text, 96, initial_indent=" " * 8,
                                                   subsequent_indent=" " * 8))
    return "\n".join(out) + "\n"


explain.__doc__ += "\n" + _keywords_doc()
