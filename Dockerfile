# Multi-stage build of its-analytics. The same steps as scripts/setup.sh, in containers.
# Build: docker build -t its-analytics .   (the model is fetched from its upstream release and sha256-checked)

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavfilter-dev libavdevice-dev \
      libclang-dev clang pkg-config python3-venv curl \
    && rm -rf /var/lib/apt/lists/*
# libtorch from PyPI, at the path the binary's rpath will name in the runtime image too.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir torch==2.13.0 onnx numpy pillow \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps onnx2torch torchvision==0.28.0
WORKDIR /src
COPY scripts/convert_model.py scripts/
RUN mkdir -p models \
    && curl -fsSL -o models/yolox_nano.onnx \
       https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx \
    && echo "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14  models/yolox_nano.onnx" | sha256sum -c - \
    && /opt/venv/bin/python scripts/convert_model.py models/yolox_nano.onnx models/yolox_nano.torchscript.pt
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
COPY configs configs
COPY benches benches
RUN PATH=/opt/venv/bin:$PATH LIBTORCH_USE_PYTORCH=1 cargo build --release --locked --bin its-analytics

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libavcodec59 libavformat59 libavutil57 libswscale6 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 its
# Only the libraries of torch (and the CUDA libraries they load), not the Python venv's rest.
COPY --from=build /opt/venv/lib/python3.11/site-packages/torch/lib /opt/venv/lib/python3.11/site-packages/torch/lib
COPY --from=build /opt/venv/lib/python3.11/site-packages/nvidia /opt/venv/lib/python3.11/site-packages/nvidia
COPY --from=build /src/target/release/its-analytics /usr/local/bin/its-analytics
COPY --from=build /src/models/yolox_nano.torchscript.pt /app/models/yolox_nano.torchscript.pt
WORKDIR /app
USER its
ENV ITS__HTTP__BIND=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fs http://127.0.0.1:8080/health/live || exit 1
ENTRYPOINT ["its-analytics"]
CMD ["serve"]
