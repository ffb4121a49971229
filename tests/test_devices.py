"""Choosing the parallelism and checking batch sizes against the devices."""

import pytest


def test_auto_is_a_mesh_with_several_devices(monkeypatch):
  from l2tl_jax import parallel as parallel_lib
  monkeypatch.setattr(parallel_lib.jax, "device_count", lambda: 1)
  assert parallel_lib.resolve_mode("auto") == "jit"
  assert parallel_lib.Parallelism("auto").mode == "jit"
  monkeypatch.setattr(parallel_lib.jax, "device_count", lambda: 8)
  assert parallel_lib.resolve_mode("auto") == "mesh"
  assert parallel_lib.resolve_mode("pmap") == "pmap"  # Explicit modes stay.


def test_a_batch_that_does_not_divide_over_the_devices_is_named():
  from experiments.configs import default
  from l2tl_jax import spec as spec_lib
  from l2tl_jax import validation
  config = default.get_config()
  config.train.batch_size = 12
  config.l2tl.val_batch_size = 32
  batches = lambda **kw: spec_lib.from_config(config).device_batches(**kw)
  with pytest.raises(validation.ConfigError) as e:
    validation.check_batches(batches(pretrains=False), devices=8,
                             mode="mesh")
  message = str(e.value)
  assert "config.train.batch_size=12 does not divide over the 8 devices" in (
      message)
  assert "e.g. 16" in message and "val_batch_size" not in message
  config.pretrain.batch_size = 100
  with pytest.raises(validation.ConfigError, match="pretrain.batch_size=100"):
    validation.check_batches(batches(pretrains=True), devices=8,
                             mode="mesh")
  config.train.batch_size = 16
  validation.check_batches(batches(pretrains=False), devices=8,
                           mode="mesh")  # 16 and 32: fine.
  validation.check_batches(batches(pretrains=True), devices=1,
                           mode="jit")  # One device takes any batch.
