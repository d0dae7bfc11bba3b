#!/usr/bin/env bash
# Installs the Debian packages fedc needs to build, test and run its main job.
# Idempotent: packages already present are not reinstalled, and nothing is
# done when all are there. Usage: scripts/setup-deps.sh [--bench]
#   --bench  also install what the benchmarks compare against (python3-torch).
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libprotobuf-c-dev protobuf-c-compiler   # wire schema
  libopenblas-dev                         # GEMM for the built-in trainer
  zlib1g-dev                              # gzipped IDX datasets
  libsodium-dev                           # CSPRNG, hashing (and later crypto)
  libssl-dev                              # TLS 1.3, and AES-CTR masks for secure aggregation
  openssl                                 # the openssl command: tests of fedc certs and keygen
  libuv1-dev                              # the server's event loop
  libcjson-dev                            # safetensors headers, metrics.jsonl
  dataset-fashion-mnist                   # the default dataset
  python3 python3-numpy python3-protobuf  # the Python protocol client and its test
  protobuf-compiler                       # generates its Python message classes
  libopenmpi-dev openmpi-bin              # fedc sim --mpi
  clang libclang-rt-14-dev                # libFuzzer targets (tests/fuzz, docs/fuzzing.md)
  iproute2                                # ip netns: the test across network namespaces (test_netns)
  python3-yaml                            # parses deploy/'s YAML files (test_deploy_files)
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(python3-torch)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup-deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "setup-deps: not root and no sudo: please install these Debian packages:" >&2
    echo "  apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-deps: apt-get not found (fedc targets Debian 12); install the equivalents of:" >&2
  echo "  ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -q || ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  echo "setup-deps: apt-get could not install: ${missing[*]}" >&2
  echo "setup-deps: check the network and the apt sources, then run this script again" >&2
  exit 1
fi
