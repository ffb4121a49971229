r"""Policy study: which way of learning the source weights learns, and pays.

  python -m experiments.study --config=experiments/configs/fashion_tops.py \
      --workdir=runs/study/fashion_tops --seeds=5 \
      [--variants=finetune,joint_uniform,reinforce_reference,meta_gradient]

Runs every variant (a method plus config overrides, `VARIANTS`) for seeds
0..N-1 under one protocol and one shared source pre-training
(DIR/runs/<variant>/seed<s>, DIR/pretrain; completed runs are read back), then
writes DIR/study.json, DIR/study.md and DIR/class_weights.png with, per
variant:

* target test accuracy, mean ± sample std over seeds, at the last step and
  at the evaluation step of best validation accuracy;
* mean validation accuracy (the only number a choice between variants may
  use: nothing is selected on the test split);
* the policy's expected weight of each source class at the last step, mean
  ± std over seeds, and their stability across seeds: the mean Spearman rank
  correlation over all pairs of seeds;
* outer-step time relative to the fine-tuning step, both measured on this
  device in the same process on synthetic batches of the run's shapes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from experiments import cli
from experiments import compare  # pylint: disable=unused-import  (its flags)
from experiments import report
from experiments import runner
from experiments import timing
from l2tl_jax import build
from l2tl_jax import checkpointing
from l2tl_jax import data
from l2tl_jax import models
from l2tl_jax import parallel
from l2tl_jax import plots
from l2tl_jax import spec as spec_lib
from l2tl_jax import synthetic
from l2tl_jax import validation


@dataclasses.dataclass(frozen=True)
class Variant:
  """A method plus config overrides.

  Attributes:
    method: config.method.
    overrides: flattened config overrides ({'l2tl.reward': ...}).
    window: model steps per sampled action (credit window). The number of
      model steps stays config.train.steps: outer steps, policy-rate
      boundaries and evaluation / logging intervals are divided by it.
    about: one line on what the variant does.
  """

  method: str
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  window: int = 1
  about: str = ""


# Every policy variant starts from the reference mode, so that the study does
# not depend on the base config's mode (config.l2tl fields set explicitly in
# the base config still apply to every variant). Low-variance REINFORCE: the paired
# reward (validation loss of the same batch before minus after the step),
# per-class log-probs summed (the gradient of independent per-class actions),
# the advantage against the previous steps' baseline, and class weights that
# scale their examples' loss directly.
REFERENCE = {"l2tl.mode": "reference"}
PAIRED = {
    **REFERENCE,
    "l2tl.reward": "loss_improvement",
    "l2tl.class_reduction": "sum",
    "l2tl.baseline_order": "previous",
    "l2tl.src_normalization": "mean",
    "l2tl.policy_lr": 0.1,
}
META = {**REFERENCE, "l2tl.estimator": "meta_gradient",
        "l2tl.src_normalization": "mean", "l2tl.policy_lr": 0.1}
# The meta-gradient at policy Adam 0.01 (mode 'meta_gradient'; the default
# before the four-benchmark study).
META_01 = {**META, "l2tl.policy_lr": 0.01}
# Weights that can exceed uniform's: lambda_c = a_c / 50 and alpha = a / 50
# (up to 1.98, starting at an expected 0.99, uniform joint training's 1).
ABOVE_UNIFORM = {"l2tl.class_weight_scale": 50.0,
                 "l2tl.loss_weight_scale": 50.0}
# Class weights from the alignment EMA (the recommended estimator), stated
# in full so that the row does not follow the recommended mode.
ALIGNMENT = {**REFERENCE, "l2tl.estimator": "alignment_ema",
             "l2tl.src_normalization": "mean"}
# The policy's expected weights at its start (zero logits, K = 100 levels):
# E[a] / 100 = 0.495 for every class weight and for alpha.
START_WEIGHT = 0.495

VARIANTS: dict[str, Variant] = {
    "finetune": Variant("finetune", about="fine-tuning on the target only"),
    # 'mean' normalisation: with every weight 1 it is the same loss as the
    # reference's (measured: identical numbers), stated so that the oracle
    # rows below differ from it in their weights only.
    "joint_uniform": Variant(
        "joint_uniform", {"l2tl.src_normalization": "mean"},
        about="joint training, every source class weight 1"),
    # The baseline as measured in the reports: kept weights renormalised to
    # sum to B ('reference'), stated so that the row does not follow the
    # recommended mode.
    "datl": Variant(
        "datl", {"l2tl.src_normalization": "reference"},
        about="joint training with DATL's fixed class weights "
        "P_t(c) / P_s(c) (the pre-trained source classifier's mean "
        "prediction on the target train images over the source class "
        "frequency), scaled to a maximum of 1; 'reference' normalisation"),
    "reinforce_reference": Variant(
        "l2tl", REFERENCE, about="the reference: accuracy reward on 32 "
        "validation images, EMA baseline, mean log-prob, policy Adam 0.01"),
    "reinforce_reference_lr0.1": Variant(
        "l2tl", {**REFERENCE, "l2tl.policy_lr": 0.1},
        about="the reference with policy Adam 0.1"),
    "reinforce_paired": Variant(
        "l2tl", PAIRED, about="paired loss-improvement reward, summed "
        "log-probs, previous-step baseline, mean normalisation, policy Adam "
        "0.1"),
    "reinforce_paired_window4": Variant(
        "l2tl", PAIRED, window=4,
        about="reinforce_paired, one action and reward per 4 model steps"),
    "reinforce_paired_loo4": Variant(
        "l2tl", {**PAIRED, "l2tl.num_samples": 4},
        about="reinforce_paired, 4 samples per step, leave-one-out baseline"),
    "meta_gradient": Variant(
        "l2tl", META, about="exact gradient of the validation loss after the "
        "model step w.r.t. the expected weights (learning to reweight), "
        "policy Adam 0.1"),
    "meta_gradient_lr0.01": Variant(
        "l2tl", {**META, "l2tl.policy_lr": 0.01},
        about="meta_gradient with policy Adam 0.01"),
    "meta_gradient_window4": Variant(
        "l2tl", META, window=4,
        about="meta_gradient through 4 unrolled model steps"),
    "meta_gradient_lr0.01_window4": Variant(
        "l2tl", META_01, window=4,
        about="meta_gradient_lr0.01 through 4 unrolled model steps"),
    "meta_gradient_lr0.01_above_uniform": Variant(
        "l2tl", {**META_01, **ABOVE_UNIFORM},
        about="meta_gradient_lr0.01 with class weights and alpha in "
        "[0, 1.98], starting at 0.99"),
    "meta_gradient_first": Variant(
        "l2tl", {**META, "l2tl.src_selection": "first"},
        about="meta_gradient with the first B source examples kept "
        "instead of the B largest weights: every class present gets a "
        "gradient, whatever its weight"),
    "alignment_ema": Variant(
        "l2tl", ALIGNMENT, about="class weights from the per-class EMA (0.99) "
        "of Learning to Reweight's positive alignment weights, mean 1, after "
        "100 uniform steps; alpha 1, mean normalisation; scores from the "
        "encoder's last two layers (LeNet: fc1, fc2)"),
    "recommended": Variant(
        "l2tl", {"l2tl.mode": "recommended"},
        about="method l2tl in mode 'recommended' (today the "
        "alignment_ema_every4 row's estimator and settings)"),
    "alignment_ema_exact": Variant(
        "l2tl", {**ALIGNMENT, "l2tl.score_layers": 0},
        about="alignment_ema with scores over the whole encoder"),
    "alignment_ema_every4": Variant(
        "l2tl", {**ALIGNMENT, "l2tl.score_every": 4},
        about="alignment_ema scoring every 4th step only"),
    "alignment_ema_every4_run": Variant(
        "l2tl", {**ALIGNMENT, "l2tl.score_every": 4,
                 "l2tl.alignment_normalize": "run"},
        about="alignment_ema_every4 with w_i = max(0, s_i), not divided by "
        "the step's mean (an ablation of Learning to Reweight's per-step "
        "normalisation)"),
    "alignment_reinforce": Variant(
        "l2tl", {**REFERENCE, "l2tl.estimator": "alignment_reinforce",
                 "l2tl.src_normalization": "mean",
                 "l2tl.class_weight_scale": 50.0},
        about="the paper's per-class categoricals (weights a / 50 in "
        "[0, 1.98]) trained by REINFORCE with one reward per class every "
        "step, (lambda_c - E lambda_c) * (class mean alignment weight - "
        "mean over classes); policy Adam 0.01, alpha 1"),
    "l2rw": Variant(
        "l2tl", {**REFERENCE, "l2tl.estimator": "l2rw",
                 "l2tl.src_normalization": "mean"},
        about="Learning to Reweight (Ren et al. 2018): fresh per-example "
        "weights max(0, s_i) / mean max(0, s) every step, top-B kept; "
        "alpha 1"),
    "meta_gradient_lr0.01_val256": Variant(
        "l2tl", {**META_01, "l2tl.val_batch_size": 256},
        about="meta_gradient_lr0.01 with 256 validation images per step"),
}
DEFAULT_VARIANTS = tuple(v for v in VARIANTS if "window4" not in v
                         and not v.startswith("meta_gradient_lr0.01_")
                         and v not in ("meta_gradient_first",
                                       "recommended"))
# Rows of benchmarks with a known answer (config.source_class_relevance).
ORACLE_VARIANTS = ("oracle", "oracle_up", "anti_oracle", "uniform_at_start",
                   "oracle_at_start")
# The oracle the gap-closed column measures against, the first one present.
GAP_ORACLES = ("oracle_up", "oracle")
# The fixed-weight oracles keep every example's weight as given: the
# reference's normalisation divides the kept loss by the number of non-zero
# kept weights, which multiplies the few kept relevant examples by up to B.
MEAN = {"l2tl.src_normalization": "mean"}


def known_answer_variants(relevance) -> dict[str, Variant]:
  """The fixed-weight rows of a benchmark whose relevant classes are known.

  Args:
    relevance: config.source_class_relevance, one 0/1 per source class.

  Returns:
    'oracle' (weight 1 on the relevant classes, 0 elsewhere; alpha 1),
    'oracle_up' (the upweighted oracle: C / #relevant on the relevant
    classes, 0 elsewhere, so the weights average 1 over the C classes as
    joint_uniform's do; alpha 1), 'anti_oracle' (1 on the irrelevant
    classes, 0 elsewhere), all three under 'mean' normalisation (the loss
    is sum_kept w_i CE_i / B), and the reference-mode rows at the policy's
    starting scale ('uniform_at_start', 'oracle_at_start': weights and alpha
    0.495, the reference's normalisation as the policy it mirrors), so that
    selection and the amount of source weight can be told apart.
  """
  try:
    rel = tuple(float(r) for r in relevance)
  except (TypeError, ValueError):
    rel = ()
  if not rel or set(rel) - {0.0, 1.0} or len(set(rel)) < 2:
    raise validation.ConfigError(
        "config.source_class_relevance must hold a 0 or 1 per source class, "
        f"with both present; got {tuple(relevance)}.")
  anti = tuple(1.0 - r for r in rel)
  up = len(rel) / sum(rel)
  # The reference policy's start: its normalisation is stated so that the
  # rows do not follow the recommended mode.
  start = {"l2tl.fixed_alpha": START_WEIGHT,
           "l2tl.src_normalization": "reference"}
  return {
      "oracle": Variant(
          "joint_fixed", {"l2tl.fixed_class_weights": rel, **MEAN},
          about="joint training on the relevant source classes only "
          "(fixed weight 1, others 0)"),
      "oracle_up": Variant(
          "joint_fixed", {"l2tl.fixed_class_weights": tuple(
              up * r for r in rel), **MEAN},
          about=f"joint training on the relevant source classes only, "
          f"upweighted (fixed weight C / #relevant = {up:.4g}, others 0: "
          f"mean 1 over classes)"),
      "anti_oracle": Variant(
          "joint_fixed", {"l2tl.fixed_class_weights": anti, **MEAN},
          about="joint training on the irrelevant source classes only"),
      "uniform_at_start": Variant(
          "joint_fixed", {"l2tl.fixed_class_weights": (START_WEIGHT,) * len(rel),
                          **start},
          about=f"joint_uniform at the policy's starting scale (every class "
          f"weight and alpha {START_WEIGHT})"),
      "oracle_at_start": Variant(
          "joint_fixed", {"l2tl.fixed_class_weights": tuple(
              START_WEIGHT * r for r in rel), **start},
          about=f"oracle at the policy's starting scale (relevant classes "
          f"and alpha {START_WEIGHT})"),
  }


def study_variants(config: ml_collections.ConfigDict) -> dict[str, Variant]:
  """`VARIANTS`, plus the known-answer rows where the config has them."""
  relevance = config.get("source_class_relevance")
  if relevance is None:
    return dict(VARIANTS)
  return {**VARIANTS, **known_answer_variants(relevance)}


def ranking_auc(weights, relevance) -> float:
  """P(a relevant class outweighs an irrelevant one), ties counting 1/2.

  The area under the ROC curve of the weights as a score for relevance:
  1 ranks every relevant class above every irrelevant one, 0.5 is chance.
  """
  w = np.asarray(weights, np.float64)
  rel = np.asarray(relevance, bool)
  pos, neg = w[rel][:, None], w[~rel][None, :]
  return float(np.mean((pos > neg) + 0.5 * (pos == neg)))
BASELINES = ("finetune", "joint_uniform")

# --config, --workdir and --seeds are experiments.compare's flags.
_VARIANTS = flags.DEFINE_list(
    "variants", list(DEFAULT_VARIANTS), f"Among {', '.join(VARIANTS)}."
)
_BENCH_STEPS = flags.DEFINE_integer(
    "bench_steps", 100, "Timed steps per step-time measurement (0: skip).",
    lower_bound=0)


def variant_config(
    config: ml_collections.ConfigDict,
    variant: Variant,
    *,
    seed: int,
    pretrain_dir: str,
) -> ml_collections.ConfigDict:
  """The run config of `variant` and `seed` on top of `config`."""
  out = runner.run_config(config, method=variant.method, seed=seed,
                           pretrain_dir=pretrain_dir)
  for key, value in variant.overrides.items():
    parent, _, name = key.rpartition(".")
    node = out
    for part in parent.split(".") if parent else []:
      node = node[part]
    if name not in node:
      raise KeyError(f"Variant override {key!r} is not a config field.")
    node[name] = value
  n = variant.window
  if n > 1:
    if out.train.steps % n:
      raise validation.ConfigError(
          f"config.train.steps={out.train.steps} is not divisible by the "
          f"credit window {n}.")
    out.l2tl.inner_steps = n
    out.train.steps //= n
    out.l2tl.policy_lr_boundaries = tuple(
        b // n for b in out.l2tl.policy_lr_boundaries)
    if out.eval.every_steps:
      out.eval.every_steps = max(1, out.eval.every_steps // n)
    out.log_every_steps = max(1, out.log_every_steps // n)
    out.checkpoint_every_steps = max(1, out.checkpoint_every_steps // n)
  return spec_lib.resolve_config(out)


# Kept under its old name: the study's weight rank correlation.
mean_pairwise_spearman = report.mean_pairwise_spearman


def step_rate(config: ml_collections.ConfigDict, task: dict[str, Any],
              num_steps: int) -> float:
  """Train steps/s of `config` on synthetic batches of the run's shapes.

  Args:
    config: a run config (finetune or a joint method).
    task: a run's task summary ('image_shape', class counts from the names).
    num_steps: timed steps per measurement (the best of 3 is kept).

  Returns:
    Steps (L2TL: outer steps) per second on the default device.
  """
  spec = spec_lib.from_config(config)
  method = spec.method
  shapes = build.Shapes(tuple(task["image_shape"]),
                        len(task["src_class_names"]),
                        len(task["tgt_class_names"]))
  model = build.make_model(spec.model, heads=method.heads, shapes=shapes)
  params, model_state = models.init_variables(model, jax.random.key(0),
                                              shapes.image_shape)
  # DATL's weights come from the pre-trained classifier; any fixed weights
  # cost the same step.
  datl = np.ones(shapes.num_src_classes)
  parts = build.target_stage(
      spec, model=model, params=params,
      model_state=model_state, rng=jax.random.key(0),
      par=parallel.Parallelism(),
      class_weights=build.fixed_class_weights(
          method, shapes, datl, spec.policy.fixed_class_weights))
  rng = np.random.default_rng(0)
  if method.joint:
    examples = synthetic.joint_batch(
        rng, spec.joint_batch_sizes(),
        image_shape=shapes.image_shape,
        num_src_classes=shapes.num_src_classes,
        num_tgt_classes=shapes.num_tgt_classes)
  else:
    examples = synthetic.examples(rng, spec.train.batch_size,
                                  image_shape=shapes.image_shape,
                                  classes=shapes.num_tgt_classes)
  return timing.steps_per_second(parts.train_step, parts.state,
                                 jax.device_put(examples),
                                 num_steps=num_steps)


def summarize_variant(
    name: str,
    variant: Variant,
    seed_runs: Sequence[tuple[int, str, dict[str, Any]]],
) -> dict[str, Any]:
  """One row of the study: accuracies, weights and their stability."""
  results = [r for _, _, r in seed_runs]
  test = [r["test_accuracy"] for r in results]
  selected = [(r.get("val_selected") or {}) for r in results]
  mean, std = report.stats(test)
  row: dict[str, Any] = {
      "method": variant.method,
      "overrides": dict(variant.overrides),
      "window": variant.window,
      "about": variant.about,
      "seeds": [s for s, _, _ in seed_runs],
      "run_dirs": [d for _, d, _ in seed_runs],
      "test_mean": mean,
      "test_std": std,
      "test_per_seed": test,
      "val_mean": float(np.mean([r["val_accuracy"] for r in results])),
      "train_time_s_mean": float(np.mean([r["train_time_s"] for r in results])),
  }
  if all("test_accuracy" in s for s in selected):
    row["val_selected_test_mean"], row["val_selected_test_std"] = (
        report.stats([s["test_accuracy"] for s in selected]))
    row["val_selected_val_mean"] = float(
        np.mean([s["val_accuracy"] for s in selected]))
  policies = [r.get("policy") or {} for r in results]
  tables = [p.get("expected_class_weights") or r.get("datl_class_weights")
            for p, r in zip(policies, results)]
  if tables and all(tables):
    names = list(results[0]["src_class_names"])
    w = np.asarray([[t[n] for n in names] for t in tables], np.float64)
    row["class_weights"] = {
        "names": names,
        "mean": w.mean(0).tolist(),
        "std": (w.std(0, ddof=1) if len(w) > 1 else 0 * w[0]).tolist(),
        "per_seed": w.tolist(),
    }
    row["spearman"] = mean_pairwise_spearman(w)
  alphas = [p.get("expected_alpha") for p in policies]
  if alphas and all(a is not None for a in alphas):
    row["alpha_mean"], row["alpha_std"] = report.stats(alphas)
  return row


def score_against_truth(rows: dict[str, dict[str, Any]],
                        relevance: Sequence[float]) -> None:
  """Adds the known-answer scores to the study rows, in place.

  Per row with learned class weights: 'auc' (per seed, mean, std, min) of
  the expected class weights against `relevance`. Per row, when the study
  has 'joint_uniform' and an oracle ('oracle_up' where present, else
  'oracle'; `GAP_ORACLES`): 'gap_oracle' = its name, 'oracle_gap' =
  oracle - joint_uniform and 'oracle_gap_closed' = (row - joint_uniform) /
  (oracle - joint_uniform) on mean last-step test accuracy (1: as good as
  the oracle, 0: as uniform, < 0: worse; None when the oracle is not above
  uniform).
  """
  for row in rows.values():
    weights = row.get("class_weights")
    if weights is None:
      continue
    if len(weights["names"]) != len(relevance):
      raise ValueError(
          f"config.source_class_relevance has {len(relevance)} entries, the "
          f"source has {len(weights['names'])} classes "
          f"({', '.join(weights['names'])}).")
    aucs = [ranking_auc(w, relevance) for w in weights["per_seed"]]
    mean, std = report.stats(aucs)
    row["auc"] = {"per_seed": aucs, "mean": mean, "std": std,
                  "min": float(min(aucs))}
  oracle = next((name for name in GAP_ORACLES if name in rows), None)
  if "joint_uniform" in rows and oracle is not None:
    uniform = rows["joint_uniform"]["test_mean"]
    gap = rows[oracle]["test_mean"] - uniform
    for row in rows.values():
      row["gap_oracle"] = oracle
      row["oracle_gap"] = gap
      # No gap to close when the oracle is not above uniform.
      row["oracle_gap_closed"] = ((row["test_mean"] - uniform) / gap
                                  if gap > 0 else None)


def check_relevance(config: ml_collections.ConfigDict) -> None:
  """Raises unless config.source_class_relevance (when set) holds one 0/1
  per source class, both present, so that a study finds a wrong length
  before any run trains (the source's class names are read without its
  images).

  Raises:
    validation.ConfigError: a value other than 0/1, or only one of them.
    data.DataError: a wrong length, or a source that cannot be opened.
  """
  relevance = config.get("source_class_relevance")
  if relevance is None:
    return
  known_answer_variants(relevance)  # The values.
  data.check_class_relevance(relevance, data.source_class_names(config.data))


def check_variants(variants: Sequence[str], seeds: int,
                   known: dict[str, Variant] | None = None) -> None:
  """Raises ValueError on variant names or seed counts no study runs.

  Args:
    variants: the names asked for.
    seeds: the number of seeds.
    known: the variants available (default `VARIANTS`; `study_variants`
      adds the oracle rows of a benchmark with a known answer).
  """
  known = VARIANTS if known is None else known
  unknown = [v for v in variants if v not in known]
  if unknown or not variants or len(set(variants)) != len(variants):
    hint = ""
    if any(v in ORACLE_VARIANTS for v in unknown):
      hint = (" The oracle rows need config.source_class_relevance (a "
              "benchmark with a known answer).")
    raise ValueError(f"Variants must be distinct names among "
                     f"{', '.join(known)}; got {list(variants)}.{hint}")
  if seeds < 1:
    raise ValueError(f"The number of seeds must be >= 1, got {seeds}.")


def run_study(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    seeds: int,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    bench_steps: int = 100,
) -> dict[str, Any]:
  """Runs the variants over seeds and writes study.json / .md / .png.

  Args:
    config: the base config.
    workdir: output directory DIR.
    seeds: seeds 0..seeds-1 per variant.
    variants: names in `VARIANTS`, in display order.
    bench_steps: timed steps per step-time measurement; 0 skips timing.

  Returns:
    The summary written to DIR/study.json.

  Raises:
    ValueError: unknown variants or bad seeds.
    validation.ConfigError: a config no run can use (every run's config is
      checked, and config.source_class_relevance against the source's
      classes, before the first run starts).
    runner.RunFailedError, runner.RunInterruptedError: as
      `compare.run_comparison`.
  """
  spec_lib.check_mode(config)
  known = study_variants(config)
  check_variants(variants, seeds, known)
  if bench_steps < 0:
    raise ValueError(f"bench_steps must be >= 0, got {bench_steps}.")
  workdir = os.path.abspath(workdir)
  pretrain_dir = runner.pretrain_dir(config, workdir)
  plan = [
      (name, variant_config(config, known[name], seed=s,
                            pretrain_dir=pretrain_dir),
       os.path.join(workdir, "runs", name, f"seed{s}"))
      for name in variants for s in range(seeds)
  ]
  for _, run_config, _ in plan:
    spec_lib.from_config(run_config)
  check_relevance(config)
  results = runner.run_all([(c, d) for _, c, d in plan])
  rows = {}
  for name in variants:
    seed_runs = [(c.seed, d, results[d]) for v, c, d in plan if v == name]
    rows[name] = summarize_variant(name, known[name], seed_runs)
  relevance = config.get("source_class_relevance")
  if relevance is not None:
    score_against_truth(rows, relevance)
  first = next(iter(results.values()))
  task = {**first["task"], "src_class_names": first["src_class_names"],
          "tgt_class_names": first["tgt_class_names"]}
  if bench_steps:
    rates = {}
    finetune_config = variant_config(config, VARIANTS["finetune"], seed=0,
                                     pretrain_dir=pretrain_dir)
    rates["finetune"] = step_rate(finetune_config, task, bench_steps)
    for name in variants:
      if name == "finetune":
        continue
      run_config = next(c for v, c, _ in plan if v == name)
      rates[name] = step_rate(run_config, task, bench_steps)
    for name in variants:
      rows[name]["steps_per_s"] = rates[name]
      rows[name]["step_time_vs_finetune"] = rates["finetune"] / rates[name]
  protocol = report.protocol(spec_lib.resolve_config(config),
                              list(results.values()),
                              seeds=list(range(seeds)), rows=[])
  for key in ("l2tl_mode", "estimator", "policy_lr"):  # Set per variant.
    protocol["train"].pop(key, None)
  summary = {
      "benchmark": f"{task.get('source')} -> {task.get('target')}",
      "variants": rows,
      "seeds": list(range(seeds)),
      "std_kind": report.std_kind(seeds),
      "protocol": protocol,
      "device": str(jax.devices()[0]),
      "base_config": json.loads(config.to_json_best_effort()),
  }
  plots.plot_study_weights(summary, os.path.join(workdir, "class_weights.png"))
  checkpointing.write_text_atomic(os.path.join(workdir, "study.md"),
                                  study_markdown(summary))
  checkpointing.write_json_atomic(os.path.join(workdir, "study.json"), summary)
  return summary


def _pm(mean: float | None, std: float | None, scale: float = 100.0,
        digits: int = 2) -> str:
  if mean is None:
    return "-"
  return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def study_table(summary: dict[str, Any]) -> str:
  """Markdown: one line per variant, accuracies in %."""
  truth = any("auc" in r or "oracle_gap_closed" in r
              for r in summary["variants"].values())
  oracle = next((r["gap_oracle"] for r in summary["variants"].values()
                 if "gap_oracle" in r), "oracle")
  extra_head = (f" AUC (min) | gap closed (to {oracle}) | alpha |"
                if truth else "")
  lines = [
      "| variant | test acc | test acc (val-selected) | val acc | "
      "weight rank corr. | step time / finetune |" + extra_head,
      "|---|---|---|---|---|---|" + ("---|---|---|" if truth else ""),
  ]
  for name, r in summary["variants"].items():
    spearman = r.get("spearman")
    ratio = r.get("step_time_vs_finetune")
    extra = ""
    if truth:
      auc, gap = r.get("auc"), r.get("oracle_gap_closed")
      auc_cell = ("-" if auc is None else
                  f"{_pm(auc['mean'], auc['std'], 1.0)} ({auc['min']:.2f})")
      gap_cell = "-" if gap is None else f"{gap:.2f}"
      alpha_cell = _pm(r.get("alpha_mean"), r.get("alpha_std"), 1.0, 3)
      extra = f" {auc_cell} | {gap_cell} | {alpha_cell} |"
    lines.append(
        f"| {name} | {_pm(r['test_mean'], r['test_std'])} | "
        f"{_pm(r.get('val_selected_test_mean'), r.get('val_selected_test_std'))}"
        f" | {100 * r['val_mean']:.2f} | "
        f"{'-' if spearman is None else f'{spearman:.2f}'} | "
        f"{'-' if ratio is None else f'{ratio:.2f}'} |" + extra)
  return "\n".join(lines) + "\n"


def weights_table(summary: dict[str, Any]) -> str:
  """Markdown: expected class weight per source class and variant."""
  rows = {n: r for n, r in summary["variants"].items() if "class_weights" in r}
  if not rows:
    return ""
  names = next(iter(rows.values()))["class_weights"]["names"]
  lines = ["| variant | " + " | ".join(names) + " | alpha |",
           "|---|" + "---|" * (len(names) + 1)]
  for name, r in rows.items():
    w = r["class_weights"]
    cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(w["mean"], w["std"])]
    alpha = _pm(r.get("alpha_mean"), r.get("alpha_std"), 1.0, 3)
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {alpha} |")
  return "\n".join(lines) + "\n"


def study_markdown(summary: dict[str, Any]) -> str:
  """study.md: both tables, what each variant is, and the protocol."""
  p = summary["protocol"]
  lines = [
      f"# Policy study: {summary['benchmark']}", "",
      f"Seeds {summary['seeds']}; ± is the {summary['std_kind']}. Test and "
      "validation accuracy in %: 'test acc' at the last step, "
      "'(val-selected)' at the evaluation step of best validation accuracy; "
      "'val acc' is the last-step accuracy on the whole validation split. "
      "Weight rank corr.: mean pairwise Spearman correlation across seeds of "
      "the learned expected class weights. Step time: outer step over "
      f"fine-tuning step, synthetic batches on {summary['device']}.", "",
      study_table(summary),
      "## Class weights: the policies' expected ones and DATL's estimate "
      "(mean ± std over seeds)", "",
      weights_table(summary),
      "## Variants", "",
  ]
  for name, r in summary["variants"].items():
    extra = "; ".join(f"{k}={v}" for k, v in r["overrides"].items())
    window = f"; credit window {r['window']}" if r["window"] > 1 else ""
    lines.append(f"- {name} ({r['method']}{'; ' + extra if extra else ''}"
                 f"{window}): {r['about']}.")
  splits = [f"{n} {s.get('size')}" for n, s in p["splits"].items()]
  lines += [
      "", "## Protocol", "",
      f"- Encoder {p['encoder']}; source pre-training {p['pretrain']['steps']} "
      "steps, shared by every run.",
      f"- Splits: {', '.join(splits)}.",
      f"- {p['train']['steps']} model steps per run (credit-window variants: "
      "fewer outer steps, the same model steps); target batch "
      f"{p['train']['batch_size']}, source batch {p['train']['src_batch_size']}"
      f", validation (reward) batch {p['train']['val_batch_size']}.",
      f"- {p['test_split_use']}",
  ]
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"Unexpected arguments: {argv[1:]}.")
  try:
    spec_lib.check_mode(flags.FLAGS.config)
    check_variants(_VARIANTS.value, flags.FLAGS.seeds,
                   study_variants(flags.FLAGS.config))
  except ValueError as e:
    cli.usage_error(str(e))
  cli.setup_logging(flags.FLAGS.workdir)
  summary = cli.run_or_exit(
      run_study, flags.FLAGS.config, flags.FLAGS.workdir,
      seeds=flags.FLAGS.seeds, variants=_VARIANTS.value,
      bench_steps=_BENCH_STEPS.value)
  workdir = os.path.abspath(flags.FLAGS.workdir)
  print()
  print(study_table(summary))
  print(weights_table(summary))
  print(f"Study: {workdir}/study.md, {workdir}/study.json, "
        f"{workdir}/class_weights.png")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
