"""Loaded weights merged into fresh ones by path: what loads, what fails."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from l2tl_jax import loading


def _fresh():
  return {"encoder": {"Dense_0": {"kernel": jnp.zeros((4, 3)),
                                  "bias": jnp.zeros((3,))}},
          "src_head": {"Dense_0": {"kernel": jnp.zeros((3, 5))}},
          "tgt_head": {"Dense_0": {"kernel": jnp.zeros((3, 2))}}}


def _loaded():
  return {"encoder": {"Dense_0": {"kernel": np.ones((4, 3)),
                                  "bias": np.full((3,), 2.0)}},
          "src_head": {"Dense_0": {"kernel": np.full((3, 5), 3.0)}}}


def test_flatten_and_unflatten_are_inverse():
  flat = loading.flatten(_fresh())
  assert sorted(flat) == ["encoder/Dense_0/bias", "encoder/Dense_0/kernel",
                          "src_head/Dense_0/kernel", "tgt_head/Dense_0/kernel"]
  chex.assert_trees_all_equal(loading.unflatten(flat), _fresh())


def test_merge_loads_everything_but_dont_load():
  merged = loading.merge(_fresh(), _loaded(), dont_load=("tgt_head/.*",))
  np.testing.assert_array_equal(merged["encoder"]["Dense_0"]["bias"], 2.0)
  np.testing.assert_array_equal(merged["src_head"]["Dense_0"]["kernel"], 3.0)
  np.testing.assert_array_equal(merged["tgt_head"]["Dense_0"]["kernel"], 0.0)
  assert merged["encoder"]["Dense_0"]["kernel"].dtype == jnp.float32
  # A pattern matching loaded leaves drops them too.
  partial = loading.merge(_fresh(), _loaded(),
                          dont_load=("tgt_head/.*", "encoder/.*/bias"))
  np.testing.assert_array_equal(partial["encoder"]["Dense_0"]["bias"], 0.0)
  np.testing.assert_array_equal(partial["encoder"]["Dense_0"]["kernel"], 1.0)


def test_every_problem_is_reported_at_once_with_the_source():
  loaded = _loaded()
  loaded["encoder"]["Dense_0"]["kernel"] = np.ones((4, 4))
  loaded["extra"] = {"w": np.ones(2)}
  with pytest.raises(loading.MergeError) as info:
    loading.merge(_fresh(), loaded, source="weights.npz")
  message = str(info.value)
  assert message.startswith("weights.npz does not fit the model")
  assert "1 in the weights but not in the model: extra/w" in message
  assert ("1 in the model but not in the weights: tgt_head/Dense_0/kernel"
          in message)
  assert ("encoder/Dense_0/kernel: model (4, 3), loaded (4, 4)" in message)
  assert "config.model.dont_load" in message


def test_bad_pattern():
  with pytest.raises(loading.MergeError, match="not a regular expression"):
    loading.merge(_fresh(), _loaded(), dont_load=("tgt_head/(",))


def test_merge_variables_takes_only_the_loaded_parts():
  state = {"batch_stats": {"encoder": {"mean": jnp.zeros(3)}}}
  loaded_state = {"batch_stats": {"encoder": {"mean": np.full(3, 5.0)}}}
  fresh = _fresh()
  del fresh["src_head"]  # A fine-tuning model: encoder and target head.
  params, model_state = loading.merge_variables(
      fresh, state, _loaded(), loaded_state, parts=("encoder",))
  np.testing.assert_array_equal(params["encoder"]["Dense_0"]["kernel"], 1.0)
  np.testing.assert_array_equal(params["tgt_head"]["Dense_0"]["kernel"], 0.0)
  assert "src_head" not in params
  np.testing.assert_array_equal(
      model_state["batch_stats"]["encoder"]["mean"], 5.0)
  with pytest.raises(loading.MergeError, match="batch_stats"):
    loading.merge_variables(fresh, state, _loaded(), {"batch_stats": {}},
                            parts=("encoder",), source="run")
