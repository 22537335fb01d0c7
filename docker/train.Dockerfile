# visiontune training image: runs the DVC pipeline (`dvc repro`) on a CPU.
#
# Build from the repository root (the build context is the repository; see .dockerignore):
#
#     docker build -f docker/train.Dockerfile -t visiontune-train .
#
# Run it on your clone (the usual way): mount the clone at /work. `dvc repro` runs there, with
# your git history, so dvc.lock, metrics/, plots/, data/ and models/model.pt (and DVC's cache,
# .dvc/cache) are written into your clone, ready to `git commit` and `dvc push`:
#
#     docker run --rm -v "$PWD":/work visiontune-train
#
# The image's user has uid 1000. If yours differs (`id -u`), run as yourself so that the files
# it writes belong to you:
#
#     docker run --rm -v "$PWD":/work --user "$(id -u):$(id -g)" visiontune-train
#
# Any other command of the project runs the same way, e.g.
#
#     docker run --rm -v "$PWD":/work visiontune-train dvc exp run -S model.lr=0.03
#     docker run --rm -v "$PWD":/work visiontune-train visiontune tune --trials 10
#
# Run it without a mount and it reproduces the snapshot of the project copied in at build time
# (code, params.yaml, dvc.yaml, dvc.lock; no data: the default digits dataset ships inside
# scikit-learn, so no network is needed). That copy has no .git, so it is set to DVC's
# `core.no_scm`; its results stay in the container (use `docker cp`, or `dvc push` to a remote).
#
# The library the stages import is the one in /work/src (PYTHONPATH), i.e. your clone's when
# mounted, so it is the code that dvc.yaml's deps hash. Third-party packages come from the image:
# rebuild it after pyproject.toml's dependencies change.
#
# CPU only: torch and torchvision come from PyTorch's CPU wheel index (no CUDA libraries, which
# would add several GB). The base tag pins Debian 12 and Python 3.11; pin it by digest too
# (python:3.11-slim-bookworm@sha256:...) when you need byte-identical rebuilds.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtual environment in /opt/venv with CPU torch and the project -------------
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
# Then the project itself.
COPY src/ src/
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
    && python -c "import torch; assert torch.version.cuda is None, torch.__version__"

# ---- final image ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

# git: dvc experiments, `visiontune tune` and `visiontune report` call it. Its version is not
# pinned: Debian replaces versions in bookworm(-security) in place, so a pinned one soon stops
# installing; the base image tag fixes the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user (uid 1000, the usual first user on a Linux host). Its home is writable by
# any uid (mode 1777, like /tmp) so that `--user "$(id -u):$(id -g)"` still has caches there.
# safe.directory: git (and libgit2) refuse a repository owned by another uid, which a mounted
# clone may be; the container only ever sees repositories mounted into it.
RUN useradd --create-home --uid 1000 --user-group visiontune \
    && install -d -m 1777 /home/visiontune/.cache \
    && chmod 1777 /home/visiontune \
    && install -d -o visiontune -g visiontune /work \
    && git config --system --add safe.directory '*'

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/work/src \
    HOME=/home/visiontune \
    MPLCONFIGDIR=/tmp/matplotlib \
    DVC_NO_ANALYTICS=1

COPY --from=builder /opt/venv /opt/venv

# The project snapshot that runs when nothing is mounted at /work. No outputs: data/, models/,
# metrics/ and plots/ are for this image to recompute.
WORKDIR /work
COPY --chown=visiontune:visiontune dvc.yaml dvc.lock params.yaml .dvcignore ./
COPY --chown=visiontune:visiontune .dvc/config .dvc/config
COPY --chown=visiontune:visiontune .dvc/plots/ .dvc/plots/
COPY --chown=visiontune:visiontune stages/ stages/
COPY --chown=visiontune:visiontune src/ src/
# weights/: the train stage's starting weights (model.weights), as far as this tree holds them
COPY --chown=visiontune:visiontune weights/ weights/

# Numeric, so that a runtime (Kubernetes runAsNonRoot) can tell it is not root.
USER 1000:1000
# Written to the snapshot's .dvc/config.local only: a mounted clone uses its own git repository.
RUN dvc config --local core.no_scm true

CMD ["dvc", "repro"]
