# gradcam-stream: `make demo` and `make test` work on a fresh Debian 12 machine; each installs
# what is missing first (scripts/setup.sh) and is quick the second time.

SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PYVER := $(shell python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
# torch-sys links against the libtorch inside the torch wheel; build.rs embeds its path (rpath).
export LIBTORCH := $(VENV)/lib/python$(PYVER)/site-packages/torch
export LIBTORCH_CXX11_ABI := 1
BIN := target/release/gradcam-stream
CARGO_FLAGS := --release --locked

.PHONY: all setup build demo test test-python wheel bench-python lint unit bench bench-detector soak soak-density soak-behind soak-detector models docs clean

all: build

setup:
	@bash scripts/setup.sh

build: setup
	cargo build $(CARGO_FLAGS)

demo: build
	$(BIN) --input samples/bikes.mp4 --output out.mp4

lint: setup
	cargo fmt --check
	cargo fmt --check --manifest-path crates/gradcam-py/Cargo.toml
	cargo clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

# The workspace: the program's tests and the GStreamer element's (its crate's tests load the
# plugin and run the program that the same `cargo test --workspace` builds), then the Python
# package's. scripts/run_tests.py runs the suites that watch real time pass in one lane and the
# rest beside them at the lowest CPU priority (RUN_TESTS='--one-lane' runs them one by one).
test: setup lint
	cargo build $(CARGO_FLAGS)
	CARGO_FLAGS="$(CARGO_FLAGS)" python3 scripts/run_tests.py $(RUN_TESTS)

# The Python package (crates/gradcam-py, a cargo workspace of its own: see its Cargo.toml):
# its wheel, built with maturin against the project's torch, and its tests on that wheel.
wheel: setup
	$(VENV)/bin/maturin build --release --locked -m crates/gradcam-py/Cargo.toml \
		-i $(VENV)/bin/python -o target/wheels

test-python: build wheel
	PYO3_PYTHON=$(VENV)/bin/python cargo clippy $(CARGO_FLAGS) --manifest-path crates/gradcam-py/Cargo.toml -- -D warnings
	bash scripts/test_python.sh

# The package against the program and a pytorch-grad-cam loop (scripts/bench_python.py).
bench-python: build wheel
	"$$(bash scripts/py_venv.sh)" scripts/bench_python.py

bench: build
	cargo build $(CARGO_FLAGS) --examples
	$(VENV)/bin/python scripts/bench.py
	$(VENV)/bin/python scripts/bench_detector.py
	$(MAKE) bench-python

# CenterFace on real faces: the engine against forward-only, the eager peers, end to end.
bench-detector: build
	$(VENV)/bin/python scripts/bench_detector.py

# Many live RTSP cameras into one process for 10 minutes (SOAK_STREAMS, SOAK_SECONDS, …: see
# scripts/soak.py); prints RSS, p95 latency and drops a minute, and checks the targets.
soak: build
	cargo build $(CARGO_FLAGS) --examples
	$(VENV)/bin/python scripts/soak.py

# The CPU machine's density: the most farm cameras one process explains with 0 drops and p95 <=
# 250 ms for 5 minutes, for 320x180 and 640x360 at 10 and 25 fps (DENSITY_*: scripts/density.py).
soak-density: build
	cargo build $(CARGO_FLAGS) --examples
	$(VENV)/bin/python scripts/density.py

# More cameras than the machine explains, with and without decoding key frames only while behind.
soak-behind: build
	cargo build $(CARGO_FLAGS) --examples
	$(VENV)/bin/python scripts/density.py --behind

models: setup

# The book (docs/, mdBook) into target/book/index.html: redraws the pictures from the built
# binary, rewrites the generated options page, and builds the HTML with mdbook, installed from
# crates.io into target/tools for this target only (never for demo or test).
MDBOOK := target/tools/bin/mdbook
MDBOOK_VERSION := 0.4.52
docs: build
	cargo build $(CARGO_FLAGS) --examples
	$(VENV)/bin/python scripts/docs_pictures.py
	cargo run $(CARGO_FLAGS) --example options_reference
	@[ -x $(MDBOOK) ] && $(MDBOOK) --version | grep -q "v$(MDBOOK_VERSION)" || \
	  cargo install mdbook --version $(MDBOOK_VERSION) --locked --no-default-features --features search --root target/tools
	$(MDBOOK) build docs
	@echo "the book: target/book/index.html"

# Live 640x360 25 fps face cameras (the face clip looped) explained by CenterFace at its default
# input size: the most one process holds with 0 drops and p95 <= 300 ms (scripts/density.py).
# FACE_FPS (25) sets the cameras' rate; DENSITY_ARGS passes flags (--detector-size 224x128).
FACE_FPS ?= 25
FACE_CAMERA := target/faces-640x360-$(FACE_FPS).mp4
soak-detector: build
	cargo build $(CARGO_FLAGS) --examples
	ffmpeg -v error -y -stream_loop 4 -i samples/carphone_pristine.mp4 -vf scale=640:360 -r $(FACE_FPS) \
	  -c:v libx264 -preset ultrafast -tune zerolatency -g $(FACE_FPS) -pix_fmt yuv420p $(FACE_CAMERA)
	DENSITY_MODEL=models/centerface.pt DENSITY_CLIP=$(FACE_CAMERA) DENSITY_KINDS=640x360@$(FACE_FPS) \
	  DENSITY_P95=300 $(VENV)/bin/python scripts/density.py

clean:
	cargo clean
	rm -rf models out.mp4
