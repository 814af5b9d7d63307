# Multi-stage build of its-analytics: the same steps as scripts/setup.sh (Debian FFmpeg 5.1 dev
# packages and libclang; a venv with torch==2.13.0, the libtorch tch 0.26 links, and
# onnxruntime==1.32.0, the CPU backend's library; YOLOX-Nano converted with a real batch
# dimension; a locked release build), in containers.
#
#   docker build -t its-analytics .
#
# The model comes from its upstream release asset, sha256-checked (setup.sh prefers the copy in
# ../shared/assets, which is outside this build context). Docker does not run on our development
# machines, so this file is reviewed, not built, there. The build context is the repository root:
# keep target/, .venv/ and .local/ out of it (a .dockerignore), they are large and not needed.

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavfilter-dev libavdevice-dev \
      libclang-dev clang pkg-config python3-venv curl \
    && rm -rf /var/lib/apt/lists/*
# libtorch from PyPI, at the path the binary's rpath will name in the runtime image too.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir torch==2.13.0 onnxruntime==1.32.0 onnx numpy pillow \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps onnx2torch torchvision==0.28.0
WORKDIR /src
COPY scripts/convert_model.py scripts/
RUN mkdir -p models/upstream \
    && curl -fsSL -o models/upstream/yolox_nano.onnx \
       https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx \
    && echo "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14  models/upstream/yolox_nano.onnx" \
       | sha256sum -c - \
    && /opt/venv/bin/python scripts/convert_model.py models/upstream/yolox_nano.onnx models
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
COPY configs configs
COPY benches benches
RUN PATH=/opt/venv/bin:$PATH LIBTORCH_USE_PYTORCH=1 cargo build --release --locked --bin its-analytics

FROM debian:bookworm-slim
# User its (10001:10001), and the mount points, all read-only to the service: configuration and
# the tokens file (auth.tokens_file) in /etc/its-analytics (compose mounts the files there,
# deploy/k8s the config/ and secrets/ folders), clips for file:// cameras in /media
# (cameras.media_dir).
RUN apt-get update && apt-get install -y --no-install-recommends \
      libavcodec59 libavformat59 libavutil57 libswscale6 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 its \
    && useradd --system --uid 10001 --gid its --no-create-home its \
    && mkdir -p /etc/its-analytics/config /etc/its-analytics/secrets /media
# Only the libraries of torch (and the CUDA libraries they load) and of ONNX Runtime, at the paths
# the binary names (rpath; the default model.onnxruntime_library), not the Python venv's rest.
COPY --from=build /opt/venv/lib/python3.11/site-packages/torch/lib /opt/venv/lib/python3.11/site-packages/torch/lib
COPY --from=build /opt/venv/lib/python3.11/site-packages/nvidia /opt/venv/lib/python3.11/site-packages/nvidia
COPY --from=build /opt/venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0 \
     /opt/venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0
COPY --from=build /src/target/release/its-analytics /usr/local/bin/its-analytics
# ONNX for CPU nodes (the default), TorchScript fp32 and bf16 for CUDA nodes (ITS__MODEL__PATH).
COPY --from=build /src/models/yolox_nano.onnx /src/models/yolox_nano.torchscript.pt /src/models/yolox_nano.bf16.pt \
     /app/models/
# The defaults (compiled into the binary too), as a starting point for `--config`.
COPY configs/default.toml /etc/its-analytics/default.toml
WORKDIR /app
# The durable outbox (events committed before delivery) lives on a volume: the one place the
# process writes (logs go to stderr), so a read-only root filesystem works (deploy/k8s/statefulset.yaml).
RUN mkdir -p /var/lib/its-analytics && chown 10001:10001 /var/lib/its-analytics
VOLUME /var/lib/its-analytics
USER 10001:10001
ENV ITS__HTTP__BIND=0.0.0.0:8080 \
    ITS__MODEL__PATH=/app/models/yolox_nano.onnx \
    ITS__CAMERAS__MEDIA_DIR=/media \
    ITS__OUTBOX__PATH=/var/lib/its-analytics/outbox.redb
EXPOSE 8080
# Liveness only: readiness (/health/ready) depends on PostgreSQL and Redis, and an orchestrator
# must not restart the process for their outages. docker-compose.yml checks readiness instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fsS -o /dev/null http://127.0.0.1:8080/health/live || exit 1
ENTRYPOINT ["its-analytics"]
CMD ["serve"]
