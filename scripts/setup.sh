#!/usr/bin/env bash
# Installs what the tests need on Debian: ONNX's backend test models (libonnx-testdata) and the
# independent Python checkers (python3-onnx, python3-jsonschema for docs/plan.schema.json), PyTorch and
# torchvision (python3-torch, python3-torchvision: test/torch-exports.test.ts exports real models with
# them into test/.cache), the headless browser the report test renders pages in (chromium), then the
# npm dependencies. Safe to run again.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(libonnx-testdata python3-onnx python3-jsonschema python3-torch python3-torchvision chromium)
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg -s "$pkg" >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "error: ${missing[*]} not installed, and neither root nor sudo is available to install them" >&2
    exit 1
  fi
  "${as_root[@]}" apt-get update
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

# onnxruntime-node's install script would download its CUDA provider from NuGet; the CPU provider
# ships inside the npm package, which is all the tests use.
ONNXRUNTIME_NODE_INSTALL=skip npm ci
