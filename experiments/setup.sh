#!/usr/bin/env bash
# Sets up ./.venv with the pinned packages and the offline Fashion-MNIST data.
# Idempotent: reinstalls only when setup.cfg or requirements.lock change.
set -euo pipefail
cd "$(dirname "$0")/.."

want="$(cat .python-version 2>/dev/null || echo 3.12)"
python=""
for candidate in \
    "$(command -v pyenv >/dev/null 2>&1 && pyenv prefix "$want" 2>/dev/null)/bin/python" \
    "$(command -v "python${want%.*}" || true)" \
    "$(command -v python3.12 || true)" \
    "$(command -v python3 || true)"; do
  if [ -x "$candidate" ] && "$candidate" -c \
      'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  echo "setup: Python >= 3.12 is needed (jax 0.12); install it (e.g. pyenv install $want) and rerun." >&2
  exit 1
fi

stamp=".venv/.l2tl_setup_stamp"
fingerprint="$(cat setup.cfg requirements.lock | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$fingerprint" ]; then
  echo "setup: creating .venv with $("$python" --version)"
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c requirements.lock -e '.[test]'
  echo "$fingerprint" > "$stamp"
fi

# Fashion-MNIST for the offline default benchmark.
fashion=/usr/share/datasets/fashion-mnist
if [ ! -f "$fashion/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian's dataset-fashion-mnist"
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
      || echo "setup: apt-get could not install dataset-fashion-mnist" >&2
  fi
fi
if [ ! -f "$fashion/train-images-idx3-ubyte.gz" ]; then
  echo "setup: Fashion-MNIST is not in $fashion. Get it either way:" >&2
  echo "  - Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist" >&2
  echo "  - online: .venv/bin/tfds build fashion_mnist --file_format=array_record" >&2
fi
echo "setup: ready ($(.venv/bin/python --version))"
