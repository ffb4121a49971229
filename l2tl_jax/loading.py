"""One way parameters enter a run: loaded weights merged into fresh ones.

A provider (source pre-training today; a weights file or an earlier run
later) yields loaded params and model state. `merge` maps them onto the
freshly initialised trees by parameter path ('encoder/Conv_0/kernel'):
every fresh leaf is taken from the loaded tree unless its path matches a
`dont_load` pattern (kept as initialised, e.g. a re-initialised head), and
anything that does not fit is reported by name, all at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import re
from typing import Any

import jax.numpy as jnp
import numpy as np

SEP = "/"


class MergeError(ValueError):
  """Loaded parameters do not fit the model."""


def flatten(tree: Any) -> dict[str, Any]:
  """{'a/b/c': leaf} of a nested mapping (keys joined with '/')."""
  out = {}

  def visit(node, prefix):
    if isinstance(node, Mapping):
      for key, child in node.items():
        visit(child, f"{prefix}{SEP}{key}" if prefix else str(key))
    else:
      out[prefix] = node

  visit(tree, "")
  return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of `flatten`."""
  out: dict[str, Any] = {}
  for path, leaf in flat.items():
    node = out
    *parents, name = path.split(SEP)
    for key in parents:
      node = node.setdefault(key, {})
    node[name] = leaf
  return out


def _matches(path: str, patterns: Sequence[str]) -> bool:
  return any(re.fullmatch(p, path) for p in patterns)


def merge(
    init: Any,
    loaded: Any,
    *,
    dont_load: Sequence[str] = (),
    source: str = "loaded weights",
) -> Any:
  """`init` with every leaf not matched by `dont_load` taken from `loaded`.

  Args:
    init: freshly initialised nested dict (the model's structure).
    loaded: nested dict of loaded arrays.
    dont_load: regular expressions (full match on the '/'-joined path) of
      leaves that keep their initial value; loaded leaves they match are
      ignored.
    source: what `loaded` came from, for error messages (a file name).

  Returns:
    A tree of `init`'s structure.

  Raises:
    MergeError: naming, all at once, the loaded leaves that match no model
      leaf, the model leaves the loaded tree lacks, and the shape
      mismatches.
  """
  for pattern in dont_load:
    try:
      re.compile(pattern)
    except re.error as e:
      raise MergeError(f"dont_load pattern {pattern!r} is not a regular "
                       f"expression: {e}") from e
  fresh = flatten(init)
  given = {k: v for k, v in flatten(loaded).items()
           if not _matches(k, dont_load)}
  unknown = sorted(set(given) - set(fresh))
  missing = sorted(k for k in fresh
                   if k not in given and not _matches(k, dont_load))
  mismatched = sorted(
      f"{k}: model {tuple(np.shape(fresh[k]))}, loaded "
      f"{tuple(np.shape(given[k]))}"
      for k in set(given) & set(fresh)
      if tuple(np.shape(given[k])) != tuple(np.shape(fresh[k])))
  problems = []
  for title, names in (("in the weights but not in the model", unknown),
                       ("in the model but not in the weights", missing),
                       ("of another shape", mismatched)):
    if names:
      problems.append(f"{len(names)} {title}: " + ", ".join(names))
  if problems:
    raise MergeError(
        f"{source} does not fit the model: " + "; ".join(problems)
        + ". List parameters to keep freshly initialised in "
        "config.model.dont_load (regular expressions on paths such as "
        "'tgt_head/.*').")
  return unflatten({k: jnp.asarray(given[k], v.dtype) if k in given else v
                    for k, v in fresh.items()})


def merge_variables(
    params: Any,
    model_state: Mapping[str, Any],
    loaded_params: Any,
    loaded_state: Mapping[str, Any],
    *,
    parts: Sequence[str],
    dont_load: Sequence[str] = (),
    source: str = "loaded weights",
) -> tuple[Any, dict[str, Any]]:
  """Merges the top-level `parts` of loaded params and model state.

  Args:
    params: fresh params {'encoder', 'src_head'?, 'tgt_head'?}.
    model_state: fresh non-param collections {'batch_stats': {...}} or {}.
    loaded_params: loaded params (may hold parts the run does not load).
    loaded_state: loaded non-param collections.
    parts: the top-level params loaded (e.g. ('encoder',) for fine-tuning);
      every other top-level part of the model stays fresh.
    dont_load: further path patterns kept fresh.
    source: for error messages.

  Returns:
    (params, model_state) merged.

  Raises:
    MergeError: see `merge`.
  """
  fresh_parts = [f"{re.escape(k)}{SEP}.*" for k in params if k not in parts]
  patterns = (*fresh_parts, *dont_load)
  pick = lambda tree: {k: v for k, v in tree.items() if k in parts}
  params = merge(params, pick(loaded_params), dont_load=patterns,
                 source=source)
  state = {}
  for collection, fresh in model_state.items():
    state[collection] = merge(
        fresh, pick(loaded_state.get(collection, {})), dont_load=patterns,
        source=f"{source} ({collection})")
  return params, state
