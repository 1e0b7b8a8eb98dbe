# The container job: `hyperflow run` on a slim Python with CPU-only torch, as a non-root user.
#   docker build -t hyperflow:latest .
#   docker run --rm -e MLFLOW_TRACKING_URI=http://mlflow.example.internal:5000 \
#     -e PREFECT_API_URL=http://prefect.example.internal:4200/api hyperflow:latest
# A Prefect docker work pool replaces CMD with its own command, which is why there is no ENTRYPOINT.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY components/ components/
COPY flows/ flows/
COPY hyperflow/ hyperflow/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:${PYTHON_VERSION}-slim
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# hyperflow sets these itself when imported (RUNTIME_DEFAULTS in hyperflow/__init__.py); the image sets
# them for what runs before that import (a Prefect or Dask worker). A test holds the two equal.
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=true \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_UI_ENABLED=false
# torch first, from the CPU index: left to the resolver, the wheel's `torch>=2.3` pulls a CUDA build.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && groupadd --gid 10001 hyperflow \
    && useradd --create-home --home-dir /app --uid 10001 --gid 10001 --shell /usr/sbin/nologin hyperflow
# Numeric, so that a cluster enforcing runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /app
COPY --chown=10001:10001 conf/ conf/
CMD ["hyperflow", "run", "conf/digits.yaml"]
