"""experiments/inspect_weights.py on the committed fixtures."""

import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from safetensors import numpy as st_numpy

from experiments import inspect_weights

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures")


@pytest.fixture(name="images")
def _images(tmp_path):
  rng = np.random.default_rng(0)
  folder = os.path.join(tmp_path, "images")
  os.makedirs(folder)
  for name, (h, w) in {"cat.png": (300, 400), "dog.jpg": (240, 200)}.items():
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        os.path.join(folder, name))
  with open(os.path.join(folder, "notes.txt"), "w") as f:
    f.write("not an image")
  return folder


def test_load_image_is_torchvision_eval_and_bit_resize(images):
  for family in ("resnet50", "bit_r50x1"):
    for name in ("cat.png", "dog.jpg"):
      out = inspect_weights.load_image(os.path.join(images, name), family)
      assert out.shape == (224, 224, 3) and out.dtype == np.uint8


def test_describes_the_mapping_and_predicts(images):
  lines = []
  path = os.path.join(FIXTURES, "tv_basic.safetensors")
  inspect_weights.inspect(path, images=images, top_k=3, emit=lines.append)
  text = "\n".join(lines)
  assert "family: resnet_v1  torchvision/timm ResNet v1.5, basic blocks" in text
  assert "source head: 10 classes" in text
  assert "parameters: 20,686 (encoder 20,356, heads 330)" in text
  assert re.search(r"\n  conv1\.weight +-> params/encoder/conv1/kernel  "
                   r"\(4, 3, 7, 7\) -> \(7, 7, 3, 4\)\n", text)
  assert re.search(r"\n  layer2\.0\.downsample\.1\.running_var +-> "
                   r"batch_stats/encoder/layer2_0/downsample_bn/var  \(8,\)",
                   text)
  assert "ignored: 14 BatchNorm step counters" in text
  assert "showing indices" in text
  cat = lines.index("cat.png:")
  assert lines[lines.index("dog.jpg:") - 4] == "cat.png:"
  probs = [float(line.split()[-1]) for line in lines[cat + 1:cat + 4]]
  assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_a_1000_way_head_shows_wordnet_ids_when_tfds_is_installed(
    tmp_path, images):
  flat = dict(st_numpy.load_file(os.path.join(FIXTURES,
                                              "tv_basic.safetensors")))
  rng = np.random.default_rng(0)
  flat["fc.weight"] = rng.normal(size=(1000, 32)).astype(np.float32)
  flat["fc.bias"] = np.zeros(1000, np.float32)
  path = os.path.join(tmp_path, "wide_head.safetensors")
  st_numpy.save_file(flat, path)
  lines = []
  inspect_weights.inspect(path, images=images, emit=lines.append)
  wnids = inspect_weights.imagenet_wnids()
  if wnids is None:
    assert "showing ImageNet class indices" in "\n".join(lines)
  else:
    assert wnids[0] == "n01440764" and len(wnids) == 1000  # tench first.
    assert "and WordNet IDs" in "\n".join(lines)
    row = lines[lines.index("cat.png:") + 1].split()
    assert wnids[int(row[0])] == row[1]


def test_command_line(images):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.inspect_weights",
       os.path.join(FIXTURES, "tv_bottleneck.safetensors"),
       f"--images={images}", "--top_k=2"],
      cwd=REPO_ROOT, capture_output=True, text=True, check=False,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr
  assert "source head: 7 classes" in result.stdout
  assert "dog.jpg:" in result.stdout
  bad = subprocess.run(
      [sys.executable, "-m", "experiments.inspect_weights",
       os.path.join(FIXTURES, "make_resnet_fixtures.py")],
      cwd=REPO_ROOT, capture_output=True, text=True, check=False,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert bad.returncode == 1
  assert "error:" in bad.stderr and "unknown weights format" in bad.stderr
