"""Atomic JSON/text writes and the orbax Checkpointer."""

import json
import os

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from l2tl_jax import checkpointing


def _listing(directory):
  return sorted(os.listdir(directory))


def test_write_json_atomic_creates_directories_and_leaves_no_temp(tmp_path):
  path = tmp_path / "a" / "b" / "results.json"
  checkpointing.write_json_atomic(
      str(path),
      {"accuracy": np.float32(0.75), "counts": np.array([1, 2]), "name": "x"})
  # numpy scalars and arrays become plain numbers and lists; indent 2 and a
  # trailing newline.
  assert path.read_text() == (
      '{\n  "accuracy": 0.75,\n  "counts": [\n    1,\n    2\n  ],\n'
      '  "name": "x"\n}\n')
  assert _listing(path.parent) == ["results.json"]
  checkpointing.write_json_atomic(str(path), [3])  # Replaces the file.
  assert json.loads(path.read_text()) == [3]
  assert _listing(path.parent) == ["results.json"]


def test_write_json_atomic_failure_keeps_the_previous_file(tmp_path):
  path = tmp_path / "results.json"
  checkpointing.write_json_atomic(str(path), {"step": 1})
  before = path.read_text()
  # json.dump has already written '{"step": 2, "bad": ' to the temporary file
  # when it meets the object.
  with pytest.raises(TypeError, match="Not JSON serialisable: object"):
    checkpointing.write_json_atomic(str(path), {"step": 2, "bad": object()})
  assert path.read_text() == before
  assert _listing(tmp_path) == ["results.json"]


def test_write_text_atomic(tmp_path):
  path = tmp_path / "new_dir" / "summary.md"
  checkpointing.write_text_atomic(str(path), "| a |\n")
  assert path.read_text() == "| a |\n"
  checkpointing.write_text_atomic(str(path), "")
  assert path.read_text() == ""
  assert _listing(path.parent) == ["summary.md"]


def test_write_text_atomic_failure_keeps_the_previous_file(tmp_path):
  path = tmp_path / "summary.md"
  checkpointing.write_text_atomic(str(path), "old")
  with pytest.raises(TypeError):
    checkpointing.write_text_atomic(str(path), b"bytes are not text")
  assert path.read_text() == "old"
  assert _listing(tmp_path) == ["summary.md"]


def _state(value):
  return {"params": {"w": jnp.full((2, 3), value, jnp.float32)},
          "step": jnp.int32(value)}


def _best(value):
  return {"w": jnp.full((2, 3), 10.0 * value, jnp.float32)}


def _step_dirs(directory):
  """Orbax names each complete checkpoint's directory by its step."""
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def test_checkpointer_round_trip(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  assert ckpt.latest_step() is None
  host = {"iterator": {"position": 17, "seed": 0}, "selection": [0.5, 3]}
  ckpt.save(4, state=_state(4.0), best=_best(4.0), host=host)
  assert ckpt.latest_step() == 4
  state, best, restored_host = ckpt.restore(
      4, state=_state(0.0), best=_best(0.0))
  chex.assert_trees_all_equal(state, _state(4.0))
  chex.assert_trees_all_equal(best, _best(4.0))
  assert restored_host == host
  ckpt.close()
  # A new Checkpointer on the same directory finds it.
  again = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  assert again.latest_step() == 4
  again.close()


def test_checkpointer_keeps_the_newest_max_to_keep(tmp_path):
  directory = str(tmp_path / "ckpt")
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, state=_state(float(step)), best=_best(float(step)),
              host={"step": step})
  assert ckpt.latest_step() == 3
  assert _step_dirs(directory) == [2, 3]
  state, _, host = ckpt.restore(2, state=_state(0.0), best=_best(0.0))
  chex.assert_trees_all_equal(state, _state(2.0))
  assert host == {"step": 2}
  ckpt.close()


def test_saving_the_latest_step_again_is_a_no_op(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(5, state=_state(5.0), best=_best(5.0), host={"v": "first"})
  ckpt.save(5, state=_state(6.0), best=_best(6.0), host={"v": "second"})
  assert ckpt.latest_step() == 5
  state, best, host = ckpt.restore(5, state=_state(0.0), best=_best(0.0))
  chex.assert_trees_all_equal(state, _state(5.0))
  chex.assert_trees_all_equal(best, _best(5.0))
  assert host == {"v": "first"}
  ckpt.close()
