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
        flag = "--" + key.replace("_", "-")
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

    def __init__(self, native):
        self._native = native

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


def explain(source, *, frames=False, **settings):
    """Explain `source` (a file, `camera://0`, an RTSP URL, or a list of them, each optionally
    `NAME=`) with the model and settings given as keywords; return a `Run` to iterate.

    `frames=True` adds each frame as shown (`Result.image`, uint8 [H, W, 3]). With no
    `output=` nothing is written (`output="null"`); `output="out.mp4"` writes the video as the
    program does. See `gradcam-stream --help` for every keyword."""
    flags = _flags(source, dict(settings))
    try:
        native = _built().explain(flags, frames)
    except KeyError as e:
        raise _keyword_error(e.args[0], settings) from None
    return Run(native)
