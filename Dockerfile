# GPU image for a rented multi-GPU box (e.g. Vast.ai, 8 GPUs): the project, its locked stack on CUDA,
# and a Ray head bound to 127.0.0.1 (dashboard and job API reachable only from inside the box, or
# through an SSH tunnel). See README "On a GPU box".
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t slm .
# CUDA 13.0: torch 2.13.0 from PyPI is a CUDA 13 build, and DeepSpeed's ops compile with the same nvcc.
FROM nvidia/cuda:13.0.1-cudnn-devel-ubuntu22.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# TOKENIZERS_PARALLELISM is no secret (DL3064 matches "TOKEN" in its name).
# hadolint ignore=DL3064
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
    TOKENIZERS_PARALLELISM=false

# Python 3.11 (the version the lock was made for); build tools and libaio for DeepSpeed's ops.
# The deadsnakes PPA keeps only its newest build of each package, so apt versions cannot be pinned.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
       build-essential git libaio-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements/ requirements/
# The locked CUDA set (requirements/lock-cuda.txt), DeepSpeed last: it is built against the installed torch
# with the ops this project uses compiled now (FusedAdam for AdamW on GPU, CPUAdam for the offload config),
# not JIT-compiled in every fresh container. No GPU is needed to build them; the arch list names the
# GPUs they are built for (A100, A10/3090, L4/4090, H100/H200, and Blackwell: B200/GB200 as sm_100 and
# RTX 5090 / RTX PRO 6000 as sm_120, the GPUs of the FF_3.13 line; CUDA 13.0 compiles both).
ENV TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0;10.0;12.0"
RUN python3.11 -m venv $VIRTUAL_ENV \
    && pip install --no-cache-dir pip==26.3 \
    && grep -v '^deepspeed==' requirements/lock-cuda.txt > /tmp/lock-without-deepspeed.txt \
    && pip install --no-cache-dir -r /tmp/lock-without-deepspeed.txt \
    && DS_BUILD_FUSED_ADAM=1 DS_BUILD_CPU_ADAM=1 pip install --no-cache-dir --no-deps --no-build-isolation \
       "$(grep '^deepspeed==' requirements/lock-cuda.txt)" \
    && ds_report

COPY . .
# The image leaves .git out (.dockerignore): the commit it was built from is recorded in every run record.
ARG GIT_COMMIT=""
ENV SLM_GIT_COMMIT=$GIT_COMMIT
RUN pip install --no-cache-dir --no-deps -e . \
    && useradd --create-home --uid 1000 trainer && chown -R trainer /app
USER 1000

ENTRYPOINT ["/app/launch/docker-entrypoint.sh"]
CMD ["sleep", "infinity"]
