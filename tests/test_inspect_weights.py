"""experiments/inspect_weights.py on the committed fixtures."""

import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from safetensors import numpy as st_numpy

from experiments import cli
from experiments import inspect_weights

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures")
BASIC = os.path.join(FIXTURES, "tv_basic.safetensors")


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


def _run(capsys, path, **kwargs):
  """(exit code, stderr) of `inspect` called as the command calls it."""
  lines = []
  with pytest.raises(SystemExit) as info:
    cli.run_or_exit(inspect_weights.inspect, path, emit=lines.append,
                    **kwargs)
  return info.value.code, capsys.readouterr().err, lines


def test_a_missing_image_folder_is_refused_before_the_file_is_read(
    tmp_path, capsys):
  missing = os.path.join(tmp_path, "no_images")
  code, err, lines = _run(capsys, os.path.join(tmp_path, "absent.npz"),
                          images=missing)
  assert code == 2 and lines == []
  assert err == (f"error: --images={missing}: no such folder; give the folder "
                 "that holds the images to classify.\n")
  code, err, _ = _run(capsys, "absent.npz")  # Also exit code 2.
  assert code == 2 and err == "error: absent.npz: no such file or directory.\n"


def test_apple_double_files_are_skipped_as_in_training(images):
  # What macOS writes next to each file on a non-Mac disk: not an image.
  with open(os.path.join(images, "._cat.png"), "wb") as f:
    f.write(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
  lines = []
  inspect_weights.inspect(BASIC, images=images, top_k=1, emit=lines.append)
  shown = [line for line in lines if line.endswith(":")
           and not line.startswith(("mapping", "class names"))]
  assert shown == ["cat.png:", "dog.jpg:"]


@pytest.mark.parametrize("side", [40, 50])  # Warning, error (> 2 x limit).
def test_a_decompression_bomb_is_one_line(tmp_path, capsys, monkeypatch,
                                          side):
  folder = os.path.join(tmp_path, "images")
  os.makedirs(folder)
  path = os.path.join(folder, "bomb.png")
  Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(path)
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
  code, err, _ = _run(capsys, BASIC, images=folder)
  assert code == 2
  assert err.startswith(f"error: Image {path} is too large to decode safely "
                        f"(Image size ({side * side} pixels) exceeds limit")
  assert err.endswith("shrink it or remove it from the folder.\n")
  assert err.count("\n") == 1


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
  missing = os.path.join(images, "missing")
  bad = subprocess.run(
      [sys.executable, "-m", "experiments.inspect_weights",
       os.path.join(FIXTURES, "make_resnet_fixtures.py"),
       f"--images={missing}"],
      cwd=REPO_ROOT, capture_output=True, text=True, check=False,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert bad.returncode == 2  # A user error, as in experiments.main.
  assert bad.stderr == (f"error: --images={missing}: no such folder; give the "
                        "folder that holds the images to classify.\n")
