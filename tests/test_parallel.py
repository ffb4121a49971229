"""Data-parallel steps on 8 fake CPU devices equal the single-device run."""

import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import pytest

# Starts a subprocess with 8 fake devices that trains end to end.
pytestmark = pytest.mark.slow


class MultiDeviceTest(absltest.TestCase):

  def test_mesh_and_pmap_match_single_device(self):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )
    env["JAX_PLATFORMS"] = "cpu"
    env["L2TL_TEST_DATA_DIR"] = tempfile.mkdtemp(prefix="l2tl_multidevice_")
    script = os.path.join(os.path.dirname(__file__), "multidevice_script.py")
    proc = subprocess.run(
        [sys.executable, script], env=env, capture_output=True, text=True,
        timeout=600,
    )
    self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
    for variant in ("reinforce", "reinforce, 3 samples", "meta_gradient",
                    "alignment_ema", "alignment_ema, whole encoder",
                    "alignment_reinforce", "l2rw", "resnet_v1 alignment_ema"):
      for mode in ("mesh", "pmap"):
        self.assertIn(f"l2tl {variant} {mode}: matches single device",
                      proc.stdout)
    self.assertIn("train_and_evaluate mesh: matches single device", proc.stdout)
    self.assertIn("train_and_evaluate pmap: matches single device", proc.stdout)
    self.assertIn("OK", proc.stdout)


if __name__ == "__main__":
  absltest.main()
