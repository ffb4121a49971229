r"""Why alignment weights rank source classes as they do: score, norm, cosine.

  python -m experiments.alignment_diagnosis \
      --config=experiments/configs/label_mismatch.py \
      --pretrain_dir=runs/study/label_mismatch/pretrain [--score_layers=2]

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

With score = norm * |g| * cosine per example, the table separates "the
class's gradients point away from the validation gradient" (cosine) from
"they point the same way but are smaller" (norm). The target head is
freshly initialised at this point (as in a run), so g is the gradient of a
near-uniform classifier's loss; a finished run's later steps are not
covered.
"""

from __future__ import annotations

import os
import tempfile

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


def diagnose(config, pretrain_dir: str, score_layers: int,
             batch_size: int) -> tuple[list[str], dict[str, np.ndarray]]:
  """(source class names, per_class_table) at the start of the target stage."""
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

  @jax.jit
  def val_grad_sum(part, batch):
    return jax.grad(lambda q: jnp.sum(
        batch["mask"] * ce(q, batch["image"], batch["label"], "tgt")))(part)

  g, count = None, 0.0
  for batch in data.eval_batches(task.tgt_val, batch_size=batch_size):
    gb = val_grad_sum(scored, batch)
    g = gb if g is None else jax.tree.map(jnp.add, g, gb)
    count += float(batch["mask"].sum())
  g = jax.tree.map(lambda x: x / count, g)
  g_flat = jnp.concatenate([x.ravel() for x in jax.tree.leaves(g)])

  @jax.jit
  def per_example(part, images, labels):
    def one(image, label):
      grad = jax.grad(lambda q: ce(q, image[None], label[None], "src")[0])(
          part)
      flat = jnp.concatenate([x.ravel() for x in jax.tree.leaves(grad)])
      return flat @ g_flat, jnp.linalg.norm(flat)
    return jax.vmap(one)(images, labels)

  dots, norms, labels = [], [], []
  for batch in data.eval_batches(task.src_train, batch_size=batch_size):
    real = batch["mask"] > 0
    d, n = per_example(scored, batch["image"], batch["label"])
    dots.append(np.asarray(d)[real])
    norms.append(np.asarray(n)[real])
    labels.append(np.asarray(batch["label"])[real])
  table = per_class_table(np.concatenate(dots), np.concatenate(norms),
                          float(jnp.linalg.norm(g_flat)),
                          np.concatenate(labels),
                          len(task.src_class_names))
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
  flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f"unexpected arguments: {argv[1:]}")
  cli.setup_logging(None)
  f = flags.FLAGS
  config = f.config
  pretrain_dir = f.pretrain_dir or tempfile.mkdtemp()
  names, table = cli.run_or_exit(diagnose, config, pretrain_dir,
                                 f.score_layers, f.batch_size)
  relevance = config.get("source_class_relevance")
  print("| source class | relevant | score | pos | norm | cosine | weight |")
  print("|---|---|---|---|---|---|---|")
  for c, name in enumerate(names):
    rel = "" if relevance is None else str(relevance[c])
    print(f"| {name} | {rel} | {table['score'][c]:.3g} | "
          f"{table['pos'][c]:.2f} | {table['norm'][c]:.3g} | "
          f"{table['cosine'][c]:.3f} | {table['weight'][c]:.2f} |")
  if relevance is not None:
    rel = np.asarray(relevance, bool)
    for key in ("score", "norm", "cosine", "weight"):
      print(f"{key}: relevant mean {table[key][rel].mean():.3g}, "
            f"irrelevant mean {table[key][~rel].mean():.3g}")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
