# CoreMAX on a CUDA workstation: a CUDA runtime with cuDNN, Python 3.11, exactly the pinned requirements.txt (which
# installs the package itself, editable), so `python scripts/train.py ...` trains on the GPU (runtime.device = auto).
#   docker build -t coremax . && docker run --gpus all -it -v "$PWD/data:/workspace/coremax/data" coremax
# On PyPI the torch wheel of the pinned version is the CUDA build; nothing else is installed.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common git make \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /workspace/coremax
COPY . .
RUN python -m pip install --upgrade pip && python -m pip install -r requirements.txt
CMD ["bash"]
