#!/usr/bin/env bash
# A BERT-base-size tagger on one NVIDIA GPU: fp16 ONNX through onnxruntime's CUDA and TensorRT
# providers and PyTorch fp16 at sequence 64, batches 32 to 512, plus the serving tagger end to
# end. Done within 8 minutes; writes gpu.json and gpu.log to $OUT if set, else bench/results
# (--smoke: bench/.cache/gpu-smoke).
#
#     bash bench/gpu.sh [--smoke] [bench/gpu.py options]   # --smoke: tiny model, CPU, under a minute
#     bash bench/gpu.sh --prepare                          # here, once: wheels the GPU image lacks
#
# The GPU machine has no network. Its python3 brings torch, transformers, onnx, onnxruntime and
# tokenizers; pytorch-crf, orjson and pyahocorasick travel as wheels in bench/.cache/gpu-wheels
# (carry that path). Missing pieces are reported, and the cases that need them are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=bench/.cache/gpu-wheels
SITE=/tmp/tagstream-gpu-site
HARD_LIMIT_S=470   # 8 minutes, less starting Python and writing the results
NEEDED="torch transformers onnx onnxruntime tokenizers numpy orjson ahocorasick torchcrf"

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p "$WHEELS"
    python="${PYTHON:-.venv/bin/python}"
    # The GPU image's python3 is CPython 3.12 on x86-64 (/work/.library/device/KINDS.md).
    for spec in orjson==3.13.0 pyahocorasick==2.3.1 pytorch-crf==0.7.2; do
        "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform manylinux1_x86_64 --platform any -d "$WHEELS" "$spec" || { echo "gpu.sh: cannot fetch $spec" >&2; exit 1; }
    done
    ls -l "$WHEELS"
    exit 0
fi

missing_modules() {
    "$1" - "$NEEDED" <<'PY'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1].split() if importlib.util.find_spec(m) is None))
PY
}

# The Python that has torch: $PYTHON, the image's python3, else this checkout's virtualenv.
python=""
for candidate in "${PYTHON:-}" python3 .venv/bin/python; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' 2>/dev/null; then
        python="$candidate"
        break
    fi
done
if [ -z "$python" ]; then
    echo "gpu.sh: no Python with torch found (tried \$PYTHON, python3, .venv/bin/python)" >&2
    exit 1
fi
missing="$(missing_modules "$python")"
if [ -n "$missing" ]; then
    if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "gpu.sh: $python lacks: $missing; installing the carried wheels from $WHEELS" >&2
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            "$WHEELS"/*.whl && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
        missing="$(missing_modules "$python")"
    fi
    [ -n "$missing" ] && echo "gpu.sh: still missing: $missing (run 'bash bench/gpu.sh --prepare' where pip works," \
        "carry $WHEELS); going on with what works" >&2
fi

smoke=0
for arg in "$@"; do [ "$arg" = "--smoke" ] && smoke=1; done
if [ -n "${OUT:-}" ]; then out="$OUT"; elif [ "$smoke" = 1 ]; then out=bench/.cache/gpu-smoke; else out=bench/results; fi
mkdir -p "$out"
log="$out/gpu.log"
{
    echo "gpu.sh: $(date -u +%FT%TZ) python $($python -c 'import sys; print(sys.version.split()[0])') ($python)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
} | tee "$log"
export PYTHONUNBUFFERED=1
timeout -k 10 "$HARD_LIMIT_S" "$python" bench/gpu.py --out "$out" "$@" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "gpu.sh: stopped at the hard limit of $HARD_LIMIT_S s; the JSON holds every case finished before" | tee -a "$log"
fi
exit "$status"
