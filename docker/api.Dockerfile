# visiontune serving image: `visiontune serve` (FastAPI + uvicorn) on port 8000, CPU only.
#
# The model is a registered version (docs/registry-and-deployment.md), named by the MODEL
# build arg as `visiontune serve --model` takes it and resolved at build time from the git tags
# in the build context: a version (classifier@v1.2.0) or what a stage holds (classifier@prod,
# the default). The version's model file is kept if models/ already holds it (fetched first
# with `dvc artifacts get` or `visiontune fetch-model`; its md5 is checked), else fetched from
# the DVC remote, with the remote's credentials as a build secret. Build from the root:
#
#     dvc artifacts get . classifier --stage prod -o models/model.pt --force
#     docker build -f docker/api.Dockerfile --build-arg MODEL=classifier@prod -t visiontune-api .
#     docker run --rm -p 8000:8000 visiontune-api
#     curl -f http://localhost:8000/metadata    # its registry record: version, stages, commit
#
# Or fetch from the GCS remote during the build (the secret never reaches an image layer):
#
#     docker build -f docker/api.Dockerfile --build-arg MODEL=classifier@v1.2.0 \
#         --secret id=gcp,src="$GOOGLE_APPLICATION_CREDENTIALS" -t visiontune-api:v1.2.0 .
#
# A model file from the build context instead, unregistered (an empty MODEL), e.g. the ONNX
# export (`visiontune export --format onnx [--quantize]` writes models/model.onnx or
# models/model.int8.onnx), with the commit it came from:
#
#     docker build -f docker/api.Dockerfile --build-arg MODEL= --build-arg MODEL_FILE=model.onnx \
#         --build-arg GIT_REVISION="$(git rev-parse HEAD)" -t visiontune-api:onnx .
#
# Or serve a model from the host without rebuilding (the file must be readable by uid 1000):
#
#     docker run --rm -p 8000:8000 -v "$PWD/models:/app/models:ro" \
#         -e VISIONTUNE_MODEL=/app/models/model.pt visiontune-api
#
# The server listens on $PORT (default 8000; platforms such as Cloud Run set it). The image
# holds the virtual environment (the installed package and its dependencies) and the model
# (with registered.json, its registry record, for a registered version): no source tree, no
# data, no git history. The GIT_REVISION build arg becomes VISIONTUNE_REVISION, which the
# server reports in /metadata.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtual environment in /opt/venv with CPU torch and the package -------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from the CPU index, in its own layer: it is the big one and changes rarely.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

WORKDIR /build
# The dependencies, from pyproject.toml alone (a stub package stands in for src/), so that
# editing the code does not reinstall them. torch stays the CPU build installed above.
COPY pyproject.toml README.md ./
RUN mkdir -p src/visiontune && touch src/visiontune/__init__.py \
    && pip install --no-cache-dir . \
    && rm -rf src build
# Then the package itself (a regular, non-editable install: the image needs no src/).
COPY src/ src/
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
    && python -c "import torch; assert torch.version.cuda is None, torch.__version__"

# The model: the registered version MODEL names, resolved from the tags in .git (the build
# context's), or the file MODEL_FILE of models/ when MODEL is empty. A models/ file with the
# md5 the version records is kept; else it comes from the DVC remote (secret id "gcp").
WORKDIR /repo
COPY .git/ .git/
COPY dvc.yaml dvc.lock .gto ./
COPY .dvc/config .dvc/config
COPY models/ models/
ARG MODEL=classifier@prod
ARG MODEL_FILE=model.pt
RUN --mount=type=secret,id=gcp,target=/run/secrets/gcp.json \
    if [ -f /run/secrets/gcp.json ]; then \
        export GOOGLE_APPLICATION_CREDENTIALS=/run/secrets/gcp.json; \
    fi \
    && mkdir -p /app/models \
    && if [ -n "$MODEL" ]; then \
        visiontune fetch-model "$MODEL" --repo /repo --out models \
        && cp models/model.pt models/registered.json /app/models/; \
    else \
        cp "models/$MODEL_FILE" /app/models/; \
    fi

# ---- final image ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

RUN useradd --create-home --uid 1000 --user-group visiontune

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8000

COPY --from=builder /opt/venv /opt/venv

# The model (and its registry record), owned by root and read-only to the server. MODEL_FILE
# names it: model.pt (default, and a registered version's), model.onnx or model.int8.onnx.
WORKDIR /app
ARG MODEL_FILE=model.pt
COPY --from=builder /app/models/ /app/models/
ENV VISIONTUNE_MODEL=/app/models/${MODEL_FILE}

# Last, as it changes with every commit. Left empty, /metadata reports no revision.
ARG GIT_REVISION=
ENV VISIONTUNE_REVISION=${GIT_REVISION}
LABEL org.opencontainers.image.revision=${GIT_REVISION} \
      org.opencontainers.image.title="visiontune-api"

# Numeric, so that a runtime (Kubernetes runAsNonRoot) can tell it is not root.
USER 1000:1000
EXPOSE 8000

# No curl in the slim image: python asks /health (urlopen fails on a non-2xx status).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

# A shell only to expand the variables; exec makes the server PID 1, so it gets SIGTERM.
CMD ["sh", "-c", "exec visiontune serve --model \"$VISIONTUNE_MODEL\" --host 0.0.0.0 --port \"${PORT:-8000}\""]
