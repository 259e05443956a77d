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
    settings.setdefault("progress", "none")
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


class Run:
    """A run in progress: iterate it for each frame's `Result` (`index`, `pts`, `stream`,
    `name`, `target`, `top`, `cam`, `boxes`, `image`). Iterating waits for the next result with
    the GIL released. `stop()` (and KeyboardInterrupt while iterating) stops the run as Ctrl-C
    stops the program: the frames in flight are written and every output is finalized."""

    def __init__(self, native, held=None):
        self._native = native
        # A live model's split, written for the run to load: removed with the run.
        self._held = held

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._native)

    def stop(self):
        self._native.stop()

    @property
    def done(self):
        return self._native.done

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def explain(source, *, model=None, layer=None, model_size=(224, 224), classes=None, frames=False,
            **settings):
    """Explain `source` (a file, `/dev/video0`, an RTSP URL, or a list of them, each optionally
    `NAME=`) and return a `Run` to iterate, one `Result` per frame.

    `model`: a live classifier (`torch.nn.Module`) with `layer=` (a module name such as
    `"layer4"`, or the submodule itself, `model.layer4`), split there in this process as
    scripts/export_model.py splits it; or the path of an exported `.pt`; or nothing for the
    bundled EfficientNet-Lite0. A live model also takes `model_size=(h, w)` (224x224), the
    input it runs at, and `classes=` (names; ImageNet's for 1000 scores).

    `frames=True` adds each frame as shown (`Result.image`, uint8 [H, W, 3]). With no
    `output=` nothing is written (`output="null"`); `output="out.mp4"` writes the video as the
    program does. Every other keyword is a flag of the program (`batch_size=8` is
    `--batch-size 8`, `box=True` is `--box`): see `gradcam-stream --help`."""
    import torch

    held = None
    if isinstance(model, torch.nn.Module):
        if layer is None:
            raise TypeError("explain() needs layer= with a live model: a module name ('layer4') "
                            "or the submodule (model.layer4)")
        held, model = _split(model, layer, model_size, classes)
    elif layer is not None:
        raise TypeError("layer= goes with a live model (model=module); an exported .pt names "
                        "its layer in its sidecar")
    if model is not None:
        settings["model"] = model
    flags = _flags(source, dict(settings))
    try:
        native = _built().explain(flags, frames)
    except KeyError as e:
        raise _keyword_error(e.args[0], settings) from None
    return Run(native, held)


def _split(module, layer, size, classes):
    """A live module split at `layer`, traced and written to a temporary folder that lives as
    long as the run: (the folder, the model's path)."""
    import tempfile
    from pathlib import Path

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
    held = tempfile.TemporaryDirectory(prefix="gradcam-stream-")
    path = Path(held.name) / "model.pt"
    split.write(traced, meta, path)
    return held, path
