r"""JAX against a hand-written PyTorch loop: the same steps, in one process.

  python -m experiments.bench_torch [--steps=300] [--repeats=3] \
      [--torch_compile=true] [--threads=0] [--pool=auto]

Prints steps/s of three steps, each as this project runs it (JAX, built by
`experiments.bench.setup`) and as a straightforward PyTorch eager loop, and
the same loop under `torch.compile` where that works on this machine, with
the ratios JAX / PyTorch:

  finetune                  the fine-tuning step: batch of 8 target images,
                            Nesterov SGD (lr 0.005, momentum 0.9), weight
                            decay 5e-4 on the kernels;
  l2tl reinforce            the reference L2TL outer step (mode=reference):
                            sample class and alpha levels, keep the top 8 of
                            16 source images by class weight (renormalised),
                            one joint SGD step on 8 source + 8 target images,
                            the reward (validation accuracy of 32 images
                            after the step), its EMA baseline, REINFORCE with
                            Adam on the policy;
  l2tl alignment_ema        the recommended estimator scoring every step
                            (mode=recommended scores every 4th step):
                            the validation gradient over the encoder's last 2
                            layers (fc1, fc2), every source example's
                            alignment with it by one forward-mode pass,
                            per-class EMAs of the positive part, the joint
                            step with those class weights (alpha 1, 'mean'
                            normalisation), the validation statistics.

Same LeNet (32x32x1 images, 10 source and 5 target classes), same batch
sizes and options (`experiments.bench.STEP_KINDS`), same initial weights
(the JAX ones, copied), same batch. The rows run interleaved: every round
times `--steps` steps of each (JAX, eager, compiled) in turn, and the best
of `--repeats` rounds is kept, so a load that comes and goes on a shared
machine hits all of them alike. A second table gives steps per second of
this process's CPU time, which a load on other processes hardly changes.
PyTorch runs with `torch.set_num_threads` = the cores this process may use
(`--threads=0`), the pool XLA:CPU uses.

On a loaded machine (more runnable threads than cores) PyTorch's OpenMP
threads, which spin while they wait for each other, slow it 10-20x at 2
threads (seen here at load averages 5-9 on 2 cores: 2.5-6 fine-tuning
steps/s against 40-110 at 1 thread), and their spinning also counts as CPU
time. There, compare at one thread on one core, where neither framework
waits for another thread, or keep two threads with OpenMP's passive wait
(set before the process starts; both gave JAX/eager ratios within 10% of
each other here):

  PYTHONPATH=. taskset -c 1 /work/torch311/bin/python -m experiments.bench_torch
  OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. /work/torch311/bin/python \
      -m experiments.bench_torch

The PyTorch steps are what a user would write (`torch.optim.SGD` /
`Adam`, `torch.distributions.Categorical`, `torch.func.grad` and
`torch.func.jvp` for the alignment), checked against the JAX steps to
float rounding in tests/test_bench_torch.py. They keep the metrics that
drive learning (losses, reward, validation accuracy) as tensors, without
host syncs; they do not compute the JAX steps' logging extras (gradient
norms) nor their non-finite guard, which a plain loop does without.
`torch.compile` wraps the forward/loss functions, the validation statistics
and the alignment scoring (default inductor backend); backward, the
optimisers and the policy stay eager.

torch is no dependency of this project: where it is not importable the
command prints one line saying so and exits 0. The project pins jax
0.12.0.1, which needs Python >= 3.12, and the only CPU build of torch at
hand (2.13.0) is for Python 3.11, so the comparison runs in a separate
Python 3.11 environment with the closest pins that install there (jax and
jaxlib 0.10.2, flax 0.12.8, numpy 2.4.6, scipy 1.17.1, contourpy 1.3.3;
every other package at requirements.lock's pin). There the JAX steps ran
5-16% more steps per CPU second than under the pinned jax 0.12.0.1
(finetune 150 against 131, reinforce 64-68 against 59, alignment_ema 39-40
against 36-38; one core, the two environments alternated twice), so the
JAX/PyTorch ratios of the pinned version are that much lower. The
environment, and the commands:

  /root/.pyenv/versions/3.11.7/bin/python -m venv /work/torch311  # a 3.11
  /work/torch311/bin/python -m pip install --upgrade pip
  /work/torch311/bin/python -m pip install torch==2.13.0   # CPU build
  grep -v -E '^(jax|jaxlib|flax|numpy|scipy|contourpy)==' requirements.lock \
      > /work/torch311/requirements-py311.lock
  printf '%s\n' jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 numpy==2.4.6 \
      scipy==1.17.1 contourpy==1.3.3 >> /work/torch311/requirements-py311.lock
  /work/torch311/bin/python -m pip install \
      -c /work/torch311/requirements-py311.lock jax jaxlib flax optax chex \
      absl-py ml-collections tensorflow-datasets grain array-record \
      orbax-checkpoint etils numpy pillow safetensors matplotlib \
      tensorboardx tqdm scikit-learn mlxtend pytest scipy
  PYTHONPATH=. /work/torch311/bin/python -m experiments.bench_torch
  PYTHONPATH=. /work/torch311/bin/python -m pytest tests/test_bench_torch.py

(`pip install torch==2.13.0` must name the version: a plain `torch` takes a
CUDA build of several GB.)
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import bench
from l2tl_jax import steps

try:  # torch is not a dependency of this project.
  import torch
  import torch.nn.functional as F
except ImportError:
  torch = F = None

_COMPILE = flags.DEFINE_bool(
    "torch_compile", True,
    "Also time the PyTorch steps under torch.compile (a second row).")
_THREADS = flags.DEFINE_integer(
    "threads", 0,
    "torch.set_num_threads; 0: the cores this process may use, as XLA:CPU.",
    lower_bound=0)

# As experiments.bench.setup builds the JAX steps.
MODEL_LR, MOMENTUM, POLICY_LR = 0.005, 0.9, 0.01
FINETUNE_WEIGHT_DECAY = 5e-4  # On the kernels ('kernels' decay set).
ROWS = (
    ("finetune", "finetune"),
    ("l2tl reinforce", "l2tl reinforce"),
    ("l2tl alignment_ema", "l2tl alignment_ema (last 2 layers)"),
)  # (row, the experiments.bench.STEP_KINDS entry it times)
FRAMEWORKS = ("jax", "torch eager", "torch.compile")
_Module = torch.nn.Module if torch is not None else object


def torch_available() -> bool:
  return torch is not None


def default_threads() -> int:
  """The cores this process may run on (what XLA:CPU's pool uses)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    return os.cpu_count() or 1


# ---------------------------------------------------------------------------
# The model.


class LeNetEncoder(_Module):
  """l2tl_jax.models.LeNet in PyTorch, on NCHW images.

  conv 5x5x32 same + ReLU, maxpool 2; conv 5x5x32 same + ReLU, maxpool 2;
  flatten; dense 512 ReLU; dense 128 ReLU.
  """

  def __init__(self, *, in_channels: int = 1, image_size: int = 32,
               conv_features: int = 32, hidden: int = 512,
               features: int = 128):
    super().__init__()
    nn = torch.nn
    self.conv1 = nn.Conv2d(in_channels, conv_features, 5, padding=2)
    self.conv2 = nn.Conv2d(conv_features, conv_features, 5, padding=2)
    self.fc1 = nn.Linear(conv_features * (image_size // 4) ** 2, hidden)
    self.fc2 = nn.Linear(hidden, features)

  def forward(self, x):
    """Images [B, C, H, W] -> features [B, features]."""
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    x = F.relu(self.fc1(x.flatten(1)))
    return F.relu(self.fc2(x))


class TransferModel(_Module):
  """l2tl_jax.models.TransferModel: the encoder and its linear heads."""

  def __init__(self, encoder: "LeNetEncoder", *, features: int,
               num_src_classes: int = 0, num_tgt_classes: int = 0):
    super().__init__()
    nn = torch.nn
    self.encoder = encoder
    self.src_head = (nn.Linear(features, num_src_classes)
                     if num_src_classes else None)
    self.tgt_head = (nn.Linear(features, num_tgt_classes)
                     if num_tgt_classes else None)

  def forward(self, x, head: str = "tgt"):
    """Images [B, C, H, W] -> logits of head 'src' or 'tgt'."""
    return getattr(self, f"{head}_head")(self.encoder(x))


def torch_layout(params: Any, image_shape: tuple[int, ...]
                 ) -> dict[str, np.ndarray]:
  """The Flax transfer model's params as `TransferModel.state_dict()` arrays.

  Conv kernels [kh, kw, in, out] -> [out, in, kh, kw]; dense kernels
  [in, out] -> [out, in]; fc1's input rows permuted from Flax's NHWC flatten
  order (h, w, c) to PyTorch's NCHW one (c, h, w).

  Args:
    params: {'encoder': {'conv1', 'conv2', 'fc1', 'fc2'}, 'src_head'?,
      'tgt_head'?} as `l2tl_jax.models.init_variables` gives them.
    image_shape: (H, W, C) of the images.
  """
  params = jax.tree.map(np.asarray, params)
  h, w = image_shape[0] // 4, image_shape[1] // 4
  enc = params["encoder"]
  out = {}
  for name in ("conv1", "conv2"):
    out[f"encoder.{name}.weight"] = enc[name]["kernel"].transpose(3, 2, 0, 1)
    out[f"encoder.{name}.bias"] = enc[name]["bias"]
  fc1 = enc["fc1"]["kernel"]  # [h * w * c, hidden], rows in (h, w, c) order.
  c = fc1.shape[0] // (h * w)
  out["encoder.fc1.weight"] = fc1.reshape(h, w, c, -1).transpose(
      3, 2, 0, 1).reshape(fc1.shape[1], -1)
  out["encoder.fc1.bias"] = enc["fc1"]["bias"]
  out["encoder.fc2.weight"] = enc["fc2"]["kernel"].T
  out["encoder.fc2.bias"] = enc["fc2"]["bias"]
  for head in ("src_head", "tgt_head"):
    if head in params:
      out[f"{head}.weight"] = params[head]["Dense_0"]["kernel"].T
      out[f"{head}.bias"] = params[head]["Dense_0"]["bias"]
  return {k: np.array(v, np.float32, order="C") for k, v in out.items()}




def torch_model(params: Any, image_shape: tuple[int, ...]) -> "TransferModel":
  """A PyTorch transfer model holding copies of the Flax `params`."""
  enc = params["encoder"]
  head_size = lambda head: (params[head]["Dense_0"]["bias"].shape[0]
                            if head in params else 0)
  features = enc["fc2"]["bias"].shape[0]
  model = TransferModel(
      LeNetEncoder(in_channels=image_shape[2], image_size=image_shape[0],
                   conv_features=enc["conv1"]["bias"].shape[0],
                   hidden=enc["fc1"]["bias"].shape[0], features=features),
      features=features, num_src_classes=head_size("src_head"),
      num_tgt_classes=head_size("tgt_head"))
  model.load_state_dict({k: torch.from_numpy(v) for k, v in
                         torch_layout(params, image_shape).items()})
  return model


def torch_examples(examples: dict[str, Any]) -> dict[str, Any]:
  """{'image' [B, H, W, C], 'label' [B]} -> NCHW float32 and int64 tensors."""
  image = np.asarray(examples["image"], np.float32).transpose(0, 3, 1, 2)
  return {"image": torch.from_numpy(np.array(image, order="C")),
          "label": torch.from_numpy(np.array(examples["label"], np.int64))}


def torch_batch(batch: dict[str, Any]) -> dict[str, Any]:
  """A JAX step's batch (one split, or {'src', 'tgt', 'val'}) for PyTorch."""
  if "image" in batch:
    return torch_examples(batch)
  return {k: torch_examples(v) for k, v in batch.items()}


# ---------------------------------------------------------------------------
# The steps, as a PyTorch user would write them.


def _sgd(model, *, weight_decay: float, kernels_only: bool):
  """Nesterov SGD; its weight decay is optax's wd * sum(p^2) / 2 loss term."""
  named = list(model.named_parameters())
  decays = lambda name: not kernels_only or name.endswith(".weight")
  groups = [{"params": [p for n, p in named if decays(n)],
             "weight_decay": weight_decay},
            {"params": [p for n, p in named if not decays(n)],
             "weight_decay": 0.0}]
  return torch.optim.SGD([g for g in groups if g["params"]], lr=MODEL_LR,
                         momentum=MOMENTUM, nesterov=True)


def _maybe_compile(fn: Callable, compiled: bool) -> Callable:
  return torch.compile(fn) if compiled else fn


class FinetuneStep:
  """The fine-tuning step: mean cross-entropy of the target head, SGD."""

  def __init__(self, model: "TransferModel", batch: dict[str, Any], *,
               compiled: bool = False):
    self.model, self.batch = model, batch
    self.opt = _sgd(model, weight_decay=FINETUNE_WEIGHT_DECAY,
                    kernels_only=True)
    self.loss = _maybe_compile(self._loss, compiled)

  def _loss(self, images, labels):
    logits = self.model(images, "tgt")
    accuracy = (logits.argmax(-1) == labels).float().mean()
    return F.cross_entropy(logits, labels), accuracy

  def __call__(self) -> dict[str, Any]:
    loss, accuracy = self.loss(self.batch["image"], self.batch["label"])
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    return {"loss": loss.detach(), "accuracy": accuracy}


class _JointStep:
  """What the L2TL steps share: the joint SGD step and validation stats."""

  def __init__(self, model: "TransferModel", batch: dict[str, Any],
               options: steps.L2TLOptions, *, compiled: bool):
    defaults = {"inner_steps": 1, "num_samples": 1, "src_selection": "top_k",
                "bn_mode": "joint"}
    other = {k: getattr(options, k) for k, v in defaults.items()
             if getattr(options, k) != v}
    if other:
      raise ValueError(f"The PyTorch L2TL steps run {defaults} only, got "
                       f"{other}.")
    self.model, self.batch, self.options = model, batch, options
    self.opt = _sgd(model, weight_decay=options.weight_decay,
                    kernels_only=options.decay_set == "kernels")
    self.keep = batch["tgt"]["label"].shape[0]
    self.joint_loss = _maybe_compile(self._joint_loss, compiled)
    self.val_stats = _maybe_compile(self._val_stats, compiled)

  def _joint_loss(self, src_images, src_labels, tgt_images, tgt_labels,
                  class_w, alpha):
    """(alpha * source loss + target loss, source loss, target loss)."""
    keep = self.keep
    example_w = class_w[src_labels]  # [M * B]
    # Stable, so that ties go to the earlier example (as jax.lax.top_k).
    idx = torch.sort(example_w, descending=True, stable=True).indices[:keep]
    kept_w = example_w[idx]
    if self.options.src_normalization == "reference":
      # Renormalised to sum to B, / #non-zero; all 0 when they sum to 0.
      total = kept_w.sum()
      kept_w = torch.where(total > 0, kept_w * keep / total.clamp_min(1e-30),
                           torch.zeros_like(kept_w))
      count = (kept_w != 0).sum().clamp_min(1)
    else:
      count = keep
    features = self.model.encoder(torch.cat([src_images[idx], tgt_images]))
    src_ce = F.cross_entropy(self.model.src_head(features[:keep]),
                             src_labels[idx], reduction="none")
    src_loss = (kept_w * src_ce).sum() / count
    tgt_loss = F.cross_entropy(self.model.tgt_head(features[keep:]),
                               tgt_labels)
    return alpha * src_loss + tgt_loss, src_loss, tgt_loss

  def _val_stats(self, images, labels):
    """(accuracy, mean cross-entropy) of the target head."""
    with torch.no_grad():
      logits = self.model(images, "tgt")
      return ((logits.argmax(-1) == labels).float().mean(),
              F.cross_entropy(logits, labels))

  def model_step(self, class_w, alpha) -> dict[str, Any]:
    """One SGD step on the joint loss, then the validation statistics."""
    src, tgt, val = self.batch["src"], self.batch["tgt"], self.batch["val"]
    loss, src_loss, tgt_loss = self.joint_loss(
        src["image"], src["label"], tgt["image"], tgt["label"], class_w,
        alpha)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    accuracy, val_loss = self.val_stats(val["image"], val["label"])
    return {"src_loss": src_loss.detach(), "tgt_loss": tgt_loss.detach(),
            "val_accuracy": accuracy, "val_loss": val_loss}


class ReinforceStep(_JointStep):
  """The reference outer step: sample, joint step, reward, REINFORCE."""

  def __init__(self, model, batch, options, *, compiled: bool = False,
               baseline: tuple[float, float] = (0.0, 0.0)):
    """`baseline`: the EMA's (numerator, denominator) to start from."""
    super().__init__(model, batch, options, compiled=compiled)
    reference = (options.reward, options.baseline_order,
                 options.class_reduction, options.entropy_coef)
    if reference != ("accuracy", "reference", "mean", 0.0) or not (
        options.learns_classes and options.learns_alpha):
      raise ValueError("The PyTorch REINFORCE step runs the reference's "
                       f"options only, got {reference}.")
    self.class_logits = torch.zeros(
        (model.src_head.out_features, options.num_levels), requires_grad=True)
    self.alpha_logits = torch.zeros((options.num_alpha_levels,),
                                    requires_grad=True)
    self.policy_opt = torch.optim.Adam([self.class_logits, self.alpha_logits],
                                       lr=POLICY_LR)
    self.baseline_num = torch.tensor(float(baseline[0]))
    self.baseline_den = torch.tensor(float(baseline[1]))

  def __call__(self, actions: dict[str, Any] | None = None):
    """One outer step with `actions` {'class' [C], 'alpha' []}, or sampled."""
    opts = self.options
    class_pi = torch.distributions.Categorical(logits=self.class_logits)
    alpha_pi = torch.distributions.Categorical(logits=self.alpha_logits)
    if actions is None:
      actions = {"class": class_pi.sample(), "alpha": alpha_pi.sample()}
    class_w = actions["class"].float() / opts.class_weight_divisor
    alpha = actions["alpha"].float() / opts.loss_weight_scale
    metrics = self.model_step(class_w, alpha)
    reward = metrics["val_accuracy"]
    m = opts.baseline_momentum
    self.baseline_num = m * self.baseline_num + (1 - m) * reward
    self.baseline_den = m * self.baseline_den + (1 - m)
    advantage = reward - self.baseline_num / self.baseline_den
    log_prob = (class_pi.log_prob(actions["class"]).mean()
                + alpha_pi.log_prob(actions["alpha"]))
    self.policy_opt.zero_grad(set_to_none=True)
    (-advantage * log_prob).backward()
    self.policy_opt.step()
    metrics.update(reward=reward, advantage=advantage)
    return metrics


class AlignmentStep(_JointStep):
  """The alignment_ema step: scores, per-class EMAs, the weighted step."""

  def __init__(self, model, batch, options, *, compiled: bool = False):
    super().__init__(model, batch, options, compiled=compiled)
    if options.score_every != 1 or options.learns_alpha:
      raise ValueError("The PyTorch alignment step scores every step, with "
                       "a fixed alpha.")
    layers = [name for name, _ in model.encoder.named_children()]
    if options.score_layers:
      layers = layers[-options.score_layers:]
    self.scored = tuple(f"{layer}.{p}" for layer in layers
                        for p in ("weight", "bias"))
    num_classes = model.src_head.out_features
    self.num = torch.zeros(num_classes)
    self.den = torch.zeros(num_classes)
    self.count = 0
    self.alpha = torch.tensor(float(options.fixed_alpha))
    self.scores = _maybe_compile(self._scores, compiled)

  def _scores(self, src_images, src_labels, val_images, val_labels):
    """s_i = <grad CE_src(x_i), grad L_val> over the scored layers [n]."""
    model = self.model
    encoder = dict(model.encoder.named_parameters())
    scored = tuple(encoder[n].detach() for n in self.scored)

    def logits(values, images, head):
      features = torch.func.functional_call(
          model.encoder, dict(zip(self.scored, values)), (images,))
      return getattr(model, f"{head}_head")(features)

    def val_loss(*values):
      return F.cross_entropy(logits(values, val_images, "tgt"), val_labels)

    def src_ce(*values):
      return F.cross_entropy(logits(values, src_images, "src"), src_labels,
                             reduction="none")

    with torch.no_grad():  # Only torch.func's transforms differentiate.
      g = torch.func.grad(val_loss, argnums=tuple(range(len(scored))))(
          *scored)
      return torch.func.jvp(src_ce, scored, g)[1]

  def __call__(self):
    opts = self.options
    src, val = self.batch["src"], self.batch["val"]
    num_classes = self.num.shape[0]
    scores = self.scores(src["image"], src["label"], val["image"],
                         val["label"])
    with torch.no_grad():
      positive = scores.clamp_min(0)
      mean = positive.mean()
      w = torch.where(mean > 0, positive / mean.clamp_min(1e-30),
                      torch.zeros_like(positive))
      sums = torch.zeros(num_classes).index_add_(0, src["label"], w)
      counts = torch.bincount(src["label"], minlength=num_classes).float()
      m = opts.alignment_momentum
      self.num = m * self.num + (1 - m) * sums
      self.den = m * self.den + (1 - m) * counts
      if self.count >= opts.warmup_steps:
        means = torch.where(self.den > 0, self.num / self.den.clamp_min(1e-30),
                            torch.zeros_like(self.num))
        total = means.sum()
        class_w = torch.where(total > 0,
                              num_classes * means / total.clamp_min(1e-30),
                              torch.ones_like(means))
      else:
        class_w = torch.ones(num_classes)
    self.count += 1
    metrics = self.model_step(class_w, self.alpha)
    metrics.update(class_weights=class_w, mean_alignment=scores.mean())
    return metrics


def torch_step(kind: "bench.StepKind", params: Any, batch: dict[str, Any], *,
               compiled: bool) -> Callable[[], Any]:
  """The PyTorch step of an `experiments.bench.STEP_KINDS` entry.

  Args:
    kind: 'finetune', or an 'l2tl' kind with the reinforce or alignment_ema
      estimator.
    params: the JAX step's initial params (copied into a fresh model).
    batch: the JAX step's batch (numpy or jax arrays).
    compiled: wrap the loss, validation and scoring functions in
      torch.compile.
  """
  model = torch_model(params, bench.IMAGE)
  batch = torch_batch(jax.device_get(batch))
  if kind.kind == "finetune":
    return FinetuneStep(model, batch, compiled=compiled)
  options = steps.L2TLOptions(**dict(kind.options))
  if options.estimator == "reinforce":
    return ReinforceStep(model, batch, options, compiled=compiled)
  if options.estimator == "alignment_ema":
    return AlignmentStep(model, batch, options, compiled=compiled)
  raise ValueError(f"No PyTorch step for {kind.name!r}.")


# ---------------------------------------------------------------------------
# Timing.


class JaxRunner:
  """Runs n steps of a compiled JAX step and waits for the device."""

  def __init__(self, setup: "bench.Setup"):
    self.state, step = setup.make()
    self.batch = setup.batch
    self.step = step.lower(self.state, self.batch).compile()

  def __call__(self, num_steps: int) -> None:
    for _ in range(num_steps):
      self.state, metrics = self.step(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))


def torch_runner(step: Callable[[], Any]) -> Callable[[int], None]:
  """Runs n PyTorch steps (CPU kernels return when they are done)."""

  def run(num_steps: int) -> None:
    for _ in range(num_steps):
      step()

  return run


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved_rates(runners: dict[Any, Callable[[int], None]], *,
                      num_steps: int, repeats: int,
                      clocks: dict[str, Callable[[], float]] | None = None
                      ) -> dict[str, dict[Any, float]]:
  """Best steps/s of each runner over `repeats` rounds, by each clock.

  Each round times `num_steps` steps of every runner in turn, so that a
  load that comes and goes slows them alike.

  Args:
    runners: key -> run(num_steps), returning when the steps are done.
    num_steps: steps per measurement.
    repeats: rounds.
    clocks: name -> clock (default `CLOCKS`: wall time, and this process's
      CPU time, which a load on other processes hardly changes).

  Returns:
    {clock name: {key: best steps per second of that clock}}.
  """
  clocks = CLOCKS if clocks is None else clocks
  best = {name: dict.fromkeys(runners, 0.0) for name in clocks}
  for _ in range(repeats):
    for key, run in runners.items():
      start = {name: clock() for name, clock in clocks.items()}
      run(num_steps)
      for name, clock in clocks.items():
        elapsed = max(clock() - start[name], 1e-9)
        best[name][key] = max(best[name][key], num_steps / elapsed)
  return best


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def build_runners(*, pool: str, compiled: bool, warmup: int = 2
                  ) -> tuple[dict[tuple[str, str], Callable[[int], None]],
                             dict[str, float], dict[str, str]]:
  """The runners of every (row, framework), warmed up.

  Returns:
    (runners, seconds of each row's torch.compile warm-up, the error of each
    row whose compiled step failed).
  """
  kinds = {k.name: k for k in bench.STEP_KINDS}
  runners, compile_s, failed = {}, {}, {}
  for row, name in ROWS:
    kind = kinds[name]
    s = bench.setup(kind.kind, encoder="lenet", pool=pool,
                    **dict(kind.options))
    params = jax.device_get(s.state.params)
    runners[row, "jax"] = JaxRunner(s)
    runners[row, "torch eager"] = torch_runner(
        torch_step(kind, params, s.batch, compiled=False))
    for framework in ("jax", "torch eager"):
      runners[row, framework](warmup)
    if not compiled:
      continue
    start = time.perf_counter()
    try:
      run = torch_runner(torch_step(kind, params, s.batch, compiled=True))
      run(warmup)
    except Exception as e:  # pylint: disable=broad-except
      failed[row] = _first_line(e)
      continue
    compile_s[row] = time.perf_counter() - start
    runners[row, "torch.compile"] = run
  return runners, compile_s, failed


def table(rates: dict[tuple[str, str], float]) -> list[str]:
  """steps/s per row and framework, and JAX's speed-up over each PyTorch."""
  batches = {k.name: k.batches for k in bench.STEP_KINDS}
  width = max(len(row) for row, _ in ROWS)
  bwidth = max(len(batches[name]) for _, name in ROWS)
  lines = [f"{'step':{width}s}  {'batch':{bwidth}s}  {'JAX':>8s}  "
           f"{'eager':>8s}  {'compile':>8s}  {'JAX/eager':>9s}  "
           f"{'JAX/compile':>11s}"]
  cell = lambda x, w, f: f"{x:{w}{f}}" if x else f"{'-':>{w}s}"
  for row, name in ROWS:
    jax_rate = rates.get((row, "jax"))
    eager = rates.get((row, "torch eager"))
    compiled = rates.get((row, "torch.compile"))
    ratio = lambda other: jax_rate / other if jax_rate and other else None
    lines.append(
        f"{row:{width}s}  {batches[name]:{bwidth}s}  "
        f"{cell(jax_rate, 8, '.1f')}  {cell(eager, 8, '.1f')}  "
        f"{cell(compiled, 8, '.1f')}  {cell(ratio(eager), 8, '.2f')}x  "
        f"{cell(ratio(compiled), 10, '.2f')}x")
  return lines


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}.")
  if torch is None:
    print("bench_torch: torch is not importable in this Python, so there is "
          "nothing to compare (torch is no dependency of this project; see "
          "the module docstring for an environment with it).")
    return
  if bench._ENCODER.value != "lenet":  # pylint: disable=protected-access
    raise app.UsageError("The PyTorch steps are LeNet's: --encoder=lenet.")
  threads = _THREADS.value or default_threads()
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  num_steps = bench._STEPS.value  # pylint: disable=protected-access
  repeats = bench._REPEATS.value  # pylint: disable=protected-access
  pool = bench._POOL.value  # pylint: disable=protected-access
  print(f"jax {jax.__version__} {jax.devices()}; torch {torch.__version__}")
  wait = os.environ.get("OMP_WAIT_POLICY", "unset")
  print(f"threads: torch.set_num_threads({threads}) (OMP_WAIT_POLICY "
        f"{wait}); XLA:CPU's own pool over the {default_threads()} cores "
        "this process may use")
  print("load average (1, 5, 15 min) at start: "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
  runners, compile_s, failed = build_runners(pool=pool,
                                             compiled=_COMPILE.value)
  rates = interleaved_rates(runners, num_steps=num_steps, repeats=repeats)
  print("load average (1, 5, 15 min) at end: "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
  print(f"\nsteps/s, best of {repeats} interleaved rounds of {num_steps} "
        f"steps (LeNet, max pool: {pool}; eager/compile: PyTorch):")
  wall = rates["wall"]
  print("\n".join(table(wall)))
  print("\nL2TL step time / fine-tuning step time:")
  for row, _ in ROWS[1:]:
    parts = [f"{fw} {wall['finetune', fw] / wall[row, fw]:.2f}"
             for fw in FRAMEWORKS
             if (row, fw) in wall and ("finetune", fw) in wall]
    print(f"  {row}: " + ", ".join(parts))
  print("\nsteps per CPU second of this process (the work itself; threads "
        "that spin while waiting count too, so compare these at --threads=1):")
  print("\n".join(table(rates["cpu"])))
  print()
  if compile_s:
    print("torch.compile warm-up (compilation) seconds: " + ", ".join(
        f"{row} {s:.0f}" for row, s in compile_s.items()))
  if failed:
    for error in sorted(set(failed.values())):
      rows = ", ".join(r for r, e in failed.items() if e == error)
      print(f"torch.compile failed ({rows}): {error}")
  elif not _COMPILE.value:
    print("torch.compile: not timed (--torch_compile=false).")


if __name__ == "__main__":
  app.run(main)
