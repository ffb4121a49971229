"""The methods a run can train: one table, read by every dispatch and report.

A method says how the target stage starts (random or from loaded weights),
which heads the model has, how the source classes are weighted (learned by
the policy, uniform, DATL's fixed estimate, or no source at all), whether
alpha is learned, and what it sees, for the reports. Adding a baseline is
one entry here plus whatever new code it needs (a new `class_weights`
source in `l2tl_jax.build`).
"""

from __future__ import annotations

import dataclasses

CLASS_WEIGHTS = ("none", "uniform", "datl", "config", "learned")


@dataclasses.dataclass(frozen=True)
class Method:
  """One way of training the target stage.

  Attributes:
    name: config.method.
    init: 'scratch' (random) or 'pretrained' (the encoder, and for joint
      methods the source head, from a weight provider).
    class_weights: 'none' (target data only), 'uniform' (every source class
      1), 'datl' (fixed P_t(c) / P_s(c)), 'config' (fixed, from
      config.l2tl.fixed_class_weights: oracles and ablations) or 'learned'
      (the policy).
    learns_alpha: whether the policy also learns alpha (else config.l2tl
      .fixed_alpha).
    sees: what the method is trained and selected on (report text).
    val_selected_row: whether reports add a row for its validation-selected
      result.
  """

  name: str
  init: str
  class_weights: str
  learns_alpha: bool = False
  sees: str = ""
  val_selected_row: bool = False

  def __post_init__(self):
    if self.init not in ("scratch", "pretrained"):
      raise ValueError(f"Method init must be 'scratch' or 'pretrained', got "
                       f"{self.init!r}.")
    if self.class_weights not in CLASS_WEIGHTS:
      raise ValueError(f"class_weights must be one of {CLASS_WEIGHTS}, got "
                       f"{self.class_weights!r}.")

  @property
  def joint(self) -> bool:
    """Trains on source and target data together (the L2TL step)."""
    return self.class_weights != "none"

  @property
  def has_policy(self) -> bool:
    return self.class_weights == "learned" or self.learns_alpha

  @property
  def heads(self) -> tuple[str, ...]:
    return ("src_head", "tgt_head") if self.joint else ("tgt_head",)

  @property
  def default_decay_set(self) -> str:
    """The reference's choice: all params for joint methods, else kernels."""
    return "all" if self.joint else "kernels"

  @property
  def loaded_parts(self) -> tuple[str, ...]:
    """Top-level params taken from the loaded weights (the rest is fresh)."""
    if self.init == "scratch":
      return ()
    return ("encoder", "src_head") if self.joint else ("encoder",)


VAL_SELECTED_SEES = (
    "as {name}, plus the validation split, which picks the evaluation step "
    "of best validation accuracy.")

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("scratch", "scratch", "none",
           sees="target train only, random initialisation; last step."),
    Method("finetune", "pretrained", "none", val_selected_row=True,
           sees="source pre-training, then target train only; last step."),
    Method("joint_uniform", "pretrained", "uniform",
           sees="source pre-training, then source train + target train "
           "jointly, every source class weighted 1, fixed alpha; validation "
           "batches only feed the logged reward, nothing is learned from "
           "them; last step."),
    Method("datl", "pretrained", "datl",
           sees="as joint_uniform with fixed class weights P_t(c) / P_s(c) "
           "estimated from the target train images; last step."),
    Method("joint_fixed", "pretrained", "config",
           sees="as joint_uniform with the fixed class weights of "
           "config.l2tl.fixed_class_weights (e.g. an oracle that knows which "
           "source classes are relevant); last step."),
    Method("l2tl_fixed_alpha", "pretrained", "learned",
           sees="source pre-training, then source train + target train "
           "jointly; validation batches train the policy (its reward, or its "
           "meta-gradient: config.l2tl.estimator), class weights learned, "
           "fixed alpha; last step."),
    Method("l2tl", "pretrained", "learned", learns_alpha=True,
           val_selected_row=True,
           sees="source pre-training, then source train + target train "
           "jointly; validation batches train the policy (its reward, or its "
           "meta-gradient: config.l2tl.estimator), class weights and alpha "
           "learned; last step."),
)}
VAL_SELECTED = " (val-selected)"


def get(name: str) -> Method:
  """The method called `name`.

  Raises:
    ValueError: no such method (the message lists them).
  """
  if name not in METHODS:
    raise ValueError(
        f"config.method must be one of {tuple(METHODS)}, got {name!r}.")
  return METHODS[name]


def report_rows(name: str) -> dict[str, str]:
  """Report row name -> what it saw, for method `name` (1 or 2 rows)."""
  method = get(name)
  rows = {name: method.sees}
  if method.val_selected_row:
    rows[name + VAL_SELECTED] = VAL_SELECTED_SEES.format(name=name)
  return rows
