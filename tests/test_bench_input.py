"""experiments/bench_input.py's 224 px JPEG path on a few generated photos."""

import os

from PIL import Image

from experiments import bench_input


def test_generated_photos_are_jpegs_of_the_asked_size(tmp_path):
  total = bench_input.write_jpegs(str(tmp_path), 4, classes=2)
  files = sorted(p for p in tmp_path.rglob("*.jpg"))
  assert [f.parent.name for f in files] == ["class00", "class00", "class01",
                                            "class01"]
  assert total == sum(os.path.getsize(f) for f in files)
  with Image.open(files[0]) as image:
    assert (image.format, image.size, image.mode) == ("JPEG", (500, 375),
                                                       "RGB")


def test_jpeg_path_is_timed_for_each_thread_count():
  rates = bench_input.bench_jpegs(40, [1, 2], batch_size=4, batches=1)
  assert [n for n, _ in rates] == [1, 2]
  assert all(rate > 0 for _, rate in rates)
