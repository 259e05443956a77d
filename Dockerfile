# gradcam-stream in a container: Debian 12, built in one stage, run from a slim second one
# with GStreamer's runtime plugins, libtorch (from the torch wheel, with its CUDA libraries)
# the binary and the GStreamer element. `docker build -t gradcam-stream .`; see
# deploy/kubernetes.yaml and the README's "Scaling out". No test builds this image (no
# container engine where the tests run); tests/deploy.rs checks what it installs.

FROM debian:12 AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ca-certificates curl build-essential make python3 python3-venv git \
 && rm -rf /var/lib/apt/lists/*
# The toolchain the project pins (Cargo.toml rust-version).
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y -q --profile minimal --default-toolchain 1.95.0
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
# scripts/setup.sh installs the Debian -dev packages, the virtualenv with torch 2.11.0, the
# model and the samples; then the release build.
RUN make build && cargo build --release --locked --examples

FROM debian:12-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ca-certificates libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 libgstrtspserver-1.0-0 \
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
      gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp gstreamer1.0-tools \
      libtcmalloc-minimal4 libgomp1 \
 && rm -rf /var/lib/apt/lists/*
# The binary finds libtorch by the absolute rpath it was linked with: keep that path, and the
# CUDA libraries beside it (torch's own rpath reaches them as ../../nvidia).
ARG SITE=/src/.venv/lib/python3.11/site-packages
COPY --from=build ${SITE}/torch/lib ${SITE}/torch/lib
COPY --from=build ${SITE}/nvidia ${SITE}/nvidia
COPY --from=build /src/target/release/gradcam-stream /usr/local/bin/gradcam-stream
# The GStreamer element `gradcam` (built by `make build` with the rest of the workspace),
# where GStreamer looks for plugins: `gst-inspect-1.0 gradcam` in the container finds it.
COPY --from=build /src/target/release/libgstgradcam.so /usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstgradcam.so
COPY --from=build /src/models /opt/gradcam-stream/models
WORKDIR /opt/gradcam-stream
# RTSP out, metrics.
EXPOSE 8554 9464
USER nobody
ENTRYPOINT ["gradcam-stream"]
CMD ["--config", "/etc/gradcam-stream/streams.toml"]
