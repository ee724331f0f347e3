# GPU image for a rented multi-GPU box (e.g. Vast.ai, 8 GPUs): the project, its pinned stack on CUDA,
# and a Ray head bound to 127.0.0.1 (dashboard and job API reachable only from inside the box, or
# through an SSH tunnel). See README "On a GPU box".
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04

# TOKENIZERS_PARALLELISM is no secret (DL3064 matches "TOKEN" in its name).
# hadolint ignore=DL3064
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
    TOKENIZERS_PARALLELISM=false

# Python 3.11 (the version the pins were tested with); build tools and libaio for DeepSpeed's JIT ops.
# The deadsnakes PPA keeps only its newest build of each package, so apt versions cannot be pinned.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
       build-essential git libaio-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements/ requirements/
# torch first (the CUDA build of the pinned version), then everything else under the same pin.
RUN python3.11 -m venv $VIRTUAL_ENV \
    && pip install --no-cache-dir pip==26.3 \
    && pip install --no-cache-dir torch==2.13.0 \
    && pip install --no-cache-dir -c requirements/constraints.txt -r requirements/base.txt

COPY . .
RUN pip install --no-cache-dir -c requirements/constraints.txt --no-deps -e . \
    && useradd --create-home --uid 1000 trainer && chown -R trainer /app
USER 1000

ENTRYPOINT ["/app/launch/docker-entrypoint.sh"]
CMD ["sleep", "infinity"]
