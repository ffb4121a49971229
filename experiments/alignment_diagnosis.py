r"""Why alignment weights rank source classes as they do: score, norm, cosine.

  python -m experiments.alignment_diagnosis \
      --config=experiments/configs/label_mismatch.py \
      --pretrain_dir=runs/study/label_mismatch/pretrain [--score_layers=2] \
      [--run_dir=runs/study/label_mismatch/runs/alignment_ema_every4/seed0]

At the start of the target stage (the cached source pre-training, fresh
target head, as every joint run starts) it computes, for every source
training example i, the gradient of its source loss over the scored encoder
layers, and the gradient g of the mean target-validation loss (the whole
validation split, target head). Per source class it prints:

  score     mean s_i = <grad CE_i, g> (the L2RW signal the alignment
            estimators weight by; positive: a step on i lowers the
            validation loss to first order)
  pos       share of the class's examples with s_i > 0
  norm      mean |grad CE_i|
  cosine    mean cos(grad CE_i, g)
  weight    the class's share of sum_i max(s_i, 0), times the number of
            classes (the class weight a single L2RW step would give, mean 1)
  weight_b  (with --val_batch=B) the same weight with g the gradient of B
            random validation images, averaged over --draws draws: what a
            scoring step sees (the runs use B = l2tl.val_batch_size, 32)
  weight_step  (with --val_batch) the weights as the estimator forms them:
            per simulated step, one validation draw and a random source
            batch of the runs' size, w_i normalised by the step's mean
            (`step_weights`), then per class sum over count

With score = norm * |g| * cosine per example, the table separates "the
class's gradients point away from the validation gradient" (cosine) from
"they point the same way but are smaller" (norm). The target head is
freshly initialised at this point (as in a run), so g is the gradient of a
near-uniform classifier's loss.

With --run_dir (a finished run of the same config and seed) the statistics
are those of the run's last checkpoint (its encoder and both heads), with
the run's learned class weights in a last column: what the estimator saw at
the end, against what it learned over the run.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from experiments import cli
from l2tl_jax import data
from l2tl_jax import losses
from l2tl_jax import models
from l2tl_jax import outer
from l2tl_jax import parallel
from l2tl_jax import run as run_lib
from l2tl_jax import saved_run
from l2tl_jax import spec as spec_lib




def per_class_table(grads_dot: np.ndarray, norms: np.ndarray,
                    g_norm: float, labels: np.ndarray,
                    num_classes: int) -> dict[str, np.ndarray]:
  """Per-class statistics of per-example scores s_i and gradient norms.

  Args:
    grads_dot: [n] s_i = <grad CE_i, g>.
    norms: [n] |grad CE_i|.
    g_norm: |g|.
    labels: [n] source class of each example.
    num_classes: number of source classes.

  Returns:
    {'score', 'pos', 'norm', 'cosine', 'weight'}, each [num_classes].
  """
  cosine = grads_dot / np.maximum(norms * g_norm, 1e-30)
  positive = np.maximum(grads_dot, 0.0)
  out = {k: np.zeros(num_classes) for k in
         ("score", "pos", "norm", "cosine", "weight")}
  for c in range(num_classes):
    m = labels == c
    if not m.any():
      continue
    out["score"][c] = grads_dot[m].mean()
    out["pos"][c] = (grads_dot[m] > 0).mean()
    out["norm"][c] = norms[m].mean()
    out["cosine"][c] = cosine[m].mean()
    out["weight"][c] = positive[m].sum()
  total = out["weight"].sum()
  counts = np.bincount(labels, minlength=num_classes)
  # Class share of the positive mass per example of the class, mean 1 over
  # the present classes (as the class-level L2RW weights).
  per_example = np.where(counts > 0, out["weight"] / np.maximum(counts, 1),
                         0.0)
  present = counts > 0
  out["weight"] = (per_example / max(per_example[present].mean(), 1e-30)
                   if total > 0 else per_example)
  return out


def step_weights(dots: np.ndarray, labels: np.ndarray, num_classes: int,
                 batch: int, *, steps_per_draw: int, seed: int = 1
                 ) -> np.ndarray:
  """Class weights as the estimator forms them, from sampled steps.

  Per simulated step: `batch` source examples drawn at random, a validation
  draw k (column k of `dots`), w_i = max(0, s_i) / mean over the step's
  examples of max(0, s_j) (0 when none is positive); over all steps, per
  class, sum of w_i over count (the EMAs' ratio without decay), mean 1 over
  the present classes.

  Args:
    dots: [n, K] s_i under K validation draws.
    labels: [n] source classes.
    num_classes: C.
    batch: source examples per step (the runs' joint 'src' batch).
    steps_per_draw: steps simulated per validation draw.
    seed: the source draws' seed.
  """
  rng = np.random.default_rng(seed)
  sums, counts = np.zeros(num_classes), np.zeros(num_classes)
  for k in range(dots.shape[1]):
    for _ in range(steps_per_draw):
      idx = rng.choice(len(labels), batch, replace=False)
      positive = np.maximum(dots[idx, k], 0.0)
      mean = positive.mean()
      w = positive / mean if mean > 0 else np.zeros_like(positive)
      np.add.at(sums, labels[idx], w)
      np.add.at(counts, labels[idx], 1.0)
  present = counts > 0
  per_class = np.where(present, sums / np.maximum(counts, 1.0), 0.0)
  return per_class / max(per_class[present].mean(), 1e-30)


def final_variables(run_dir: str, seed: int) -> tuple[int, Any, Any]:
  """(step, params, model_state) of a finished run's newest checkpoint.

  Raises:
    saved_run.RunError: no run in `run_dir`, one of another seed (its
      target splits are other draws than the config's), no checkpoint, or a
      damaged newest one.
  """
  try:
    with open(os.path.join(run_dir, "config.json")) as f:
      run_seed = json.load(f).get("seed")
  except (OSError, ValueError) as e:
    raise saved_run.RunError(
        f"--run_dir={run_dir} holds no readable config.json ({e}); give a "
        "run's workdir.") from e
  if run_seed != seed:
    raise saved_run.RunError(
        f"--run_dir={run_dir} is a run of seed {run_seed}, the config has "
        f"seed {seed}: set --config.seed={run_seed} so the target splits are "
        "the run's.")
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  steps = saved_run.checkpoint_steps(ckpt_dir)
  if not steps:
    raise saved_run.RunError(f"{ckpt_dir} holds no checkpoint.")
  # The newest step only: a damaged one is an error, not passed over.
  step, state, _, _, _ = saved_run.restore_intact(ckpt_dir, steps[:1])
  return step, state["params"], state.get("model_state") or {}


def diagnose(config, pretrain_dir: str, score_layers: int, batch_size: int,
             run_dir: str | None = None, val_batch: int = 0, draws: int = 0
             ) -> tuple[list[str], dict[str, np.ndarray]]:
  """(source class names, per_class_table) at the start of the target stage,
  or, with `run_dir`, at the last checkpoint of that finished run.

  With `val_batch` and `draws`, the table also holds 'weight_b': the one-step
  class weights from the gradient of `val_batch` random validation images
  instead of the whole split, averaged over `draws` draws (seed 0): what one
  scoring step of the estimators sees (l2tl.val_batch_size images); and
  'weight_step': those draws' scores turned into class weights by the
  estimator's per-step rule (`step_weights`, source batches of the run's
  joint 'src' size).
  """
  config = config.copy_and_resolve_references()
  config.method = "joint_uniform"
  config.pretrain_cache_dir = os.path.abspath(pretrain_dir)
  spec = spec_lib.from_config(config)
  task = data.build_task(spec.data)
  par = parallel.Parallelism()
  with tempfile.TemporaryDirectory() as workdir:
    run = run_lib.Run(spec, task, workdir, par)
    state = run.host_state()
  params, model_state, model = state.params, state.model_state, run.model
  if run_dir is not None:
    _, saved, saved_state = final_variables(run_dir, spec.seed)
    if (jax.tree.structure(saved) != jax.tree.structure(params)
        or jax.tree.map(np.shape, saved) != jax.tree.map(np.shape, params)):
      raise saved_run.RunError(
          f"The checkpoint of --run_dir={run_dir} holds other parameters "
          "than this config's joint model (another benchmark or model?).")
    params = jax.tree.map(jnp.asarray, saved)
    model_state = jax.tree.map(jnp.asarray, saved_state)
  encoder = params["encoder"]
  names = outer.scored_layers(encoder, score_layers)
  scored = {k: encoder[k] for k in names}

  def with_scored(part):
    return {**params, "encoder": {**encoder, **part}}

  def ce(part, images, labels, head):
    p = with_scored(part)
    features, _ = models.apply_encoder(model, p, model_state, images,
                                       train=False)
    return losses.cross_entropy(models.apply_head(model, p, features, head),
                                labels)

  def flat_grads(part, images, labels, head):
    def one(image, label):
      grad = jax.grad(lambda q: ce(q, image[None], label[None], head)[0])(
          part)
      return jnp.concatenate([x.ravel() for x in jax.tree.leaves(grad)])
    return jax.vmap(one)(images, labels)

  per_example_grads = jax.jit(flat_grads, static_argnums=3)

  # Per-example validation gradients: g is their mean over the whole split;
  # each draw's g_k their mean over `val_batch` of them (a step's view). They
  # are kept ([n_val, P] floats) only when draws need them.
  rows, total, count = [], None, 0
  for batch in data.eval_batches(task.tgt_val, batch_size=batch_size):
    real = np.asarray(batch["mask"]) > 0
    grads = np.asarray(per_example_grads(
        scored, batch["image"], batch["label"], "tgt"))[real]
    total = grads.sum(0) if total is None else total + grads.sum(0)
    count += len(grads)
    if val_batch:
      rows.append(grads)
  gs = [total / count]
  if val_batch:
    if val_batch > count:
      raise data.DataError(
          f"--val_batch={val_batch} is larger than the validation split "
          f"({count} images); give at most {count}.")
    val = np.concatenate(rows)
    rng = np.random.default_rng(0)
    for _ in range(draws):
      gs.append(val[rng.choice(count, val_batch, replace=False)].mean(0))
  g_all = jnp.asarray(np.stack(gs))  # [1 + draws, P]

  @jax.jit
  def per_example(part, images, labels):
    flat = flat_grads(part, images, labels, "src")
    return flat @ g_all.T, jnp.linalg.norm(flat, axis=1)

  dots, norms, labels = [], [], []
  for batch in data.eval_batches(task.src_train, batch_size=batch_size):
    real = np.asarray(batch["mask"]) > 0
    d, n = per_example(scored, batch["image"], batch["label"])
    dots.append(np.asarray(d)[real])
    norms.append(np.asarray(n)[real])
    labels.append(np.asarray(batch["label"])[real])
  dots, norms = np.concatenate(dots), np.concatenate(norms)
  labels = np.concatenate(labels)
  g_norms = np.linalg.norm(np.asarray(g_all), axis=1)
  num_classes = len(task.src_class_names)
  table = per_class_table(dots[:, 0], norms, float(g_norms[0]), labels,
                          num_classes)
  if len(gs) > 1:
    draws_weight = [per_class_table(dots[:, k], norms, float(g_norms[k]),
                                    labels, num_classes)["weight"]
                    for k in range(1, len(gs))]
    table["weight_b"] = np.mean(draws_weight, axis=0)
    table["weight_step"] = step_weights(
        dots[:, 1:], labels, num_classes,
        spec.joint_batch_sizes()["src"], steps_per_draw=100)
  return list(task.src_class_names), table


def _define_flags() -> None:
  """The command's flags (defined when run, so importing it defines none)."""
  config_flags.DEFINE_config_file("config", None, "Benchmark config file.",
                                  lock_config=False)
  flags.DEFINE_string(
      "pretrain_dir", None, "Source pre-training cache (a study's "
      "<workdir>/pretrain), so the pre-trained encoder is the runs' own.")
  flags.DEFINE_integer("score_layers", 2, "Last top-level encoder modules "
                       "scored (0: all).", lower_bound=0)
  flags.DEFINE_integer("batch_size", 250, "Examples per gradient batch.",
                       lower_bound=1)
  flags.DEFINE_integer(
      "val_batch", 0, "Also the one-step class weights from the gradient of "
      "this many random validation images (the runs' l2tl.val_batch_size, "
      "32), averaged over --draws draws (column weight_b); 0: not computed.",
      lower_bound=0)
  flags.DEFINE_integer("draws", 50, "Validation draws for --val_batch.",
                       lower_bound=1)
  flags.DEFINE_string(
      "run_dir", None, "A finished run of this config (a study's "
      "runs/<variant>/seed<N>; set --config.seed=N): the statistics at its "
      "last checkpoint instead of the start of the target stage, with its "
      "learned class weights beside them.")
  flags.mark_flags_as_required(["config"])


def _learned_weights(run_dir: str | None, names: list[str]
                     ) -> np.ndarray | None:
  """The run's expected class weights in `names` order; None without."""
  if run_dir is None:
    return None
  try:
    with open(os.path.join(run_dir, "results.json")) as f:
      weights = (json.load(f).get("policy") or {}).get(
          "expected_class_weights")
  except (OSError, ValueError):
    return None
  if not weights or set(weights) != set(names):
    return None
  return np.asarray([weights[n] for n in names], np.float64)


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments: {argv[1:]}")
  cli.setup_logging(None)
  f = flags.FLAGS
  config = f.config
  pretrain_dir = f.pretrain_dir or tempfile.mkdtemp()
  names, table = cli.run_or_exit(diagnose, config, pretrain_dir,
                                 f.score_layers, f.batch_size, f.run_dir,
                                 f.val_batch, f.draws)
  keys = ["score", "pos", "norm", "cosine", "weight"]
  if "weight_b" in table:
    keys += ["weight_b", "weight_step"]
  learned = _learned_weights(f.run_dir, names)
  if learned is not None:
    table["learned"] = learned
    keys.append("learned")
  relevance = config.get("source_class_relevance")
  print("| source class | relevant | " + " | ".join(keys) + " |")
  print("|---|---|" + "---|" * len(keys))
  fmt = {"pos": ".2f", "cosine": ".3f", "weight": ".2f", "weight_b": ".2f",
         "weight_step": ".2f", "learned": ".2f"}
  for c, name in enumerate(names):
    rel = "" if relevance is None else str(relevance[c])
    cells = " | ".join(f"{table[k][c]:{fmt.get(k, '.3g')}}" for k in keys)
    print(f"| {name} | {rel} | {cells} |")
  if relevance is not None:
    rel = np.asarray(relevance, bool)
    for key in [k for k in keys if k != "pos"]:
      print(f"{key}: relevant mean {table[key][rel].mean():.3g}, "
            f"irrelevant mean {table[key][~rel].mean():.3g}")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
