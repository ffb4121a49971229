#!/usr/bin/env bash
# The accelerator check in one call, for a fresh GPU/TPU machine that has
# jax (and flax, optax, chex, orbax) but not tensorflow-datasets, grain,
# array-record or ml-collections, and no network.
#
#   bash experiments/device_check.sh --prepare   # here, where pip reaches its
#                                                # registry: fills .device_wheels/
#   bash experiments/device_check.sh             # there: install, check, bench
#   bash experiments/device_check.sh --smoke     # here, on the CPU: the same
#                                                # checks at 32 px (no install)
#
# --prepare gets (after `bash experiments/setup.sh`), for CPython 3.12 on
# x86_64 Linux, the pinned wheels
# (requirements.lock) of every package the project imports that such a
# machine may lack, without the large ones it has (jax, numpy, scipy, torch,
# matplotlib, pillow, flax, optax, chex, orbax, tensorstore) or that the
# check does not use (pandas, pyarrow, scikit-learn, mlxtend, notebooks).
# .device_wheels/ is ignored by git; carry it to the machine with the
# working tree (run: carry=[".device_wheels"]; about 15 MB).
#
# On the machine (its python3, or $PYTHON) it installs from .device_wheels,
# with --no-index --no-deps into .device_site, only the distributions that
# Python lacks (the project runs on the jax it finds), prints the versions
# and devices,
# imports the whole project, and runs experiments/bench_device.py at 224 px:
# bfloat16 then float32, the fine-tuning step and the L2TL step with each
# estimator, the batch BATCH (default 0: the largest power of two that fits),
# each dtype under its own time limit (DTYPE_TIMEOUT, default 220 s) so one
# slow search cannot take the other's figures. IMAGE_SIZE, ENCODER and
# BENCH_ARGS (bench_device flags) override the defaults. Output goes to $OUT (default
# ./device_check_out): env.txt, bench_<dtype>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

wheels="${WHEELS:-.device_wheels}"
out="${OUT:-$PWD/device_check_out}"
mode="${1:-device}"

# Pinned in requirements.lock; the rest is expected on the machine.
NEEDED=(
  absl-py aiofiles array_record attrs certifi charset-normalizer
  cloudpickle dm-tree docstring_parser einops etils fsspec
  googleapis-common-protos grain humanize idna immutabledict
  ml_collections msgpack nest-asyncio2 packaging portpicker promise protobuf
  psutil
  PyYAML requests safetensors simple-parsing simplejson six
  tensorboardX tensorflow-datasets tensorflow-metadata termcolor toml
  toolz tqdm typing_extensions urllib3 wrapt zipp
)

pinned() {  # The requirements.lock lines of NEEDED.
  local name
  for name in "${NEEDED[@]}"; do
    grep -i -E "^${name//[-_]/[-_]}==" requirements.lock \
      || { echo "device_check: $name is not in requirements.lock" >&2; exit 1; }
  done
}

case "$mode" in
  --prepare)
    rm -rf "$wheels.tmp" && mkdir -p "$wheels.tmp"
    pinned > "$wheels.tmp/requirements.txt"
    # pip wheel takes the registry's wheels and builds the pure-Python
    # sdists (promise) into wheels; this venv's Python 3.12 on x86_64 Linux
    # matches the lent machines'.
    .venv/bin/python -m pip wheel --quiet --no-deps \
      -w "$wheels.tmp" -r "$wheels.tmp/requirements.txt"
    rm -rf "$wheels" && mv "$wheels.tmp" "$wheels"
    echo "device_check: $(ls "$wheels"/*.whl | wc -l) wheels," \
         "$(du -sh "$wheels" | cut -f1) in $wheels"
    exit 0
    ;;
  --smoke)
    python=.venv/bin/python
    size=32; encoder=resnet18; extra=(--width=8 --batch=2 --steps=1
                                      --repeats=1 --matmul=256)
    ;;
  device)
    if [ ! -f "$wheels/requirements.txt" ]; then
      echo "device_check: $wheels/ is missing: run" \
           "'bash experiments/device_check.sh --prepare' where pip reaches" \
           "its registry and carry $wheels with the working tree." >&2
      exit 1
    fi
    python="${PYTHON:-python3}"
    # Only the distributions this Python lacks, into .device_site: nothing
    # the machine has is replaced (the project runs on the jax it finds).
    "$python" - "$wheels/requirements.txt" > "$wheels/missing.txt" <<'EOF'
import importlib.metadata as md
import sys
for line in open(sys.argv[1]):
  name = line.split("==")[0].strip()
  try:
    md.version(name)
  except md.PackageNotFoundError:
    print(line.strip())
EOF
    if [ -s "$wheels/missing.txt" ]; then
      echo "device_check: installing $(wc -l < "$wheels/missing.txt")" \
           "packages into .device_site"
      "$python" -m pip install --quiet --no-index --no-deps \
        --target .device_site --find-links "$wheels" -r "$wheels/missing.txt"
    fi
    export PYTHONPATH="$PWD/.device_site${PYTHONPATH:+:$PYTHONPATH}"
    size="${IMAGE_SIZE:-224}"; encoder="${ENCODER:-resnet50}"
    # shellcheck disable=SC2206  # Word splitting wanted.
    extra=(${BENCH_ARGS:---batch=${BATCH:-0} --steps=10 --repeats=2})
    ;;
  *)
    echo "usage: bash experiments/device_check.sh [--prepare|--smoke]" >&2
    exit 2
    ;;
esac

mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  date -u
  command -v nvidia-smi >/dev/null && nvidia-smi -L || true
  "$python" - <<'EOF'
import importlib.metadata as md
import jax
for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint",
             "tensorflow-datasets", "grain", "ml_collections", "numpy"):
  try:
    print(f"{name}=={md.version(name)}")
  except md.PackageNotFoundError:
    print(f"{name}: not installed")
print("devices:", jax.devices())
import l2tl_jax.train  # The whole project imports on this jax.
import experiments.main  # pylint: disable=unused-import
print("imports: ok")
EOF
} 2>&1 | tee "$out/env.txt"

status=0
for dtype in bfloat16 float32; do
  echo "device_check: bench_device $encoder ${size}px $dtype"
  timeout "${DTYPE_TIMEOUT:-220}" "$python" -m experiments.bench_device \
      --encoder="$encoder" --image_size="$size" --dtypes="$dtype" \
      "${extra[@]}" 2>&1 | grep -v '^[IW][0-9]\{4\} ' | tee "$out/bench_$dtype.txt" \
    || { echo "device_check: $dtype stopped (timeout or error)"; status=1; }
done
echo "device_check: figures in $out"
exit "$status"
