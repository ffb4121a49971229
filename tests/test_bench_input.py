"""experiments/bench_input.py's 224 px JPEG path on a few generated photos."""

import os

from PIL import Image
import pytest

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


@pytest.mark.parametrize("flag,message", [
    ("--steps=0", "flag --steps=0: 0 is not a positive integer"),
    ("--src_batch=0", "flag --src_batch=0: 0 is not a positive integer"),
    ("--jpeg_threads=", "--jpeg_threads must be a comma-separated list"),
    ("--jpeg_threads=1,x", "--jpeg_threads must be a comma-separated list"),
    ("--outer_steps_per_s=0", "--outer_steps_per_s must be > 0"),
    ("--consumption=-1", "--consumption must be > 0"),
    ("--jpegs=-1", "-1 is not a non-negative integer"),
])
def test_bad_flags_stop_before_any_work_in_one_line(capsys, flag, message):
  with pytest.raises(SystemExit) as info:
    bench_input.main(["bench_input", flag])
  assert info.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ""  # Nothing was built or timed.
  assert captured.err.startswith("error: ") and message in captured.err
  assert captured.err.count("\n") == 1
