"""Reference hyper-parameters shared by every config (not run on its own).

The L2TL policy follows config.l2tl.mode: 'recommended' (the default, chosen
by the policy study: class weights from the per-class EMA of each source
example's validation-gradient alignment, estimator 'alignment_ema', scored
every 4th outer step, starting as uniform joint training), 'reference' (the authors' REINFORCE) or
'meta_gradient' (the exact gradient of the validation loss through the model
update).

Other configs call `get_config()` here and override the data and, where
their protocol says so, the step counts. Every number of the reference's
MNIST -> SVHN-5 experiment is here; none is hard-coded in the library.
"""

import ml_collections
from ml_collections import config_dict

from l2tl_jax import data



def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # One of l2tl_jax.methods.METHODS: scratch, finetune, joint_uniform, datl,
  # l2tl_fixed_alpha, l2tl.
  config.method = "l2tl"
  # Seed of the target-stage initialisation, data order and policy samples.
  config.seed = 0
  # Datasets and the target task (see l2tl_jax.data.get_default_data_config).
  config.data = data.get_default_data_config()

  config.model = ml_collections.ConfigDict()
  # Registered encoder name: 'lenet' (reference), 'resnet', 'mlp'.
  config.model.encoder = "lenet"
  # Keyword arguments of the encoder.
  config.model.encoder_kwargs = ml_collections.ConfigDict()
  # Regular expressions of parameter paths (e.g. 'encoder/Dense_1/.*') kept
  # freshly initialised instead of loaded, on top of what the method
  # re-initialises (the target head; the source head for target-only
  # methods). See l2tl_jax.loading.
  config.model.dont_load = ()
  # Weights to start from instead of source pre-training (which is then
  # skipped): a torchvision/timm .safetensors (or .pth where torch imports),
  # a BiT .npz, or a directory written by this project (a run's workdir or
  # checkpoint, a pre-training cache entry). config.model.encoder must be
  # the architecture of the file (python -m experiments.inspect_weights).
  config.model.init_from = config_dict.placeholder(str)
  # With init_from: fill config.data's preprocessing fields left at their
  # defaults (image_size, normalization, crops) from the weights' family
  # (torchvision: ImageNet mean/std, 224, resize 256 + centre crop; BiT:
  # [-1, 1], 224); fields you set win. False: keep config.data as it is.
  config.model.preprocessing_from_weights = True
  # Activations and matmuls: 'float32' or 'bfloat16' (encoders with a dtype
  # field: the ImageNet ResNets); params, optimiser state and losses stay
  # float32.
  config.model.dtype = "float32"
  # Batch statistics in the target stage (encoders with batch norm):
  # 'joint' (source and target normalised together; the reference),
  # 'target' (running statistics from the target examples only), 'frozen'
  # (the pretrained running statistics, never updated).
  config.model.bn_mode = "joint"

  config.pretrain = ml_collections.ConfigDict()
  # Source pre-training steps (reference: 2000).
  config.pretrain.steps = 2000
  # Source batch size.
  config.pretrain.batch_size = 128
  # Base learning rate of Nesterov-momentum SGD.
  config.pretrain.lr = 0.01
  # Steps after which the rate is scaled by lr_scales (reference: 500, 1500).
  config.pretrain.lr_boundaries = (500, 1500)
  # Absolute multipliers of lr after each boundary.
  config.pretrain.lr_scales = (0.1, 0.01)
  # Momentum of the SGD optimiser.
  config.pretrain.momentum = 0.9
  # Weight decay coefficient of sum(p^2)/2.
  config.pretrain.weight_decay = 5e-4
  # Which parameters decay: 'kernels' (reference) or 'all'.
  config.pretrain.decay_set = "kernels"
  # Seed of pre-training; one pre-training serves every target-stage seed.
  config.pretrain.seed = 0

  config.train = ml_collections.ConfigDict()
  # Target-stage steps (L2TL: outer steps; reference: 1200).
  config.train.steps = 1200
  # Target train batch size B (reference: 8).
  config.train.batch_size = 8
  # Base learning rate of the model optimiser (Nesterov SGD).
  config.train.lr = 0.005
  # Steps after which lr is scaled (reference: 800, in inner steps).
  config.train.lr_boundaries = (800,)
  # Absolute multipliers of lr after each boundary.
  config.train.lr_scales = (0.1,)
  # Momentum of the model optimiser.
  config.train.momentum = 0.9
  # Weight decay coefficient of sum(p^2)/2.
  config.train.weight_decay = 5e-4
  # Which parameters decay; None: the reference's choice per method
  # ('kernels' for scratch / fine-tuning, 'all' for the joint methods).
  config.train.decay_set = config_dict.placeholder(str)

  config.l2tl = ml_collections.ConfigDict()
  # 'recommended', 'reference' or 'meta_gradient': fills in estimator,
  # reward, class_reduction, baseline_order, src_normalization, num_samples,
  # policy_lr and val_batch_size where they are left None
  # (l2tl_jax.spec.L2TL_MODES). 'reference' is the authors' REINFORCE;
  # 'recommended' the variant chosen by the policy study (README.md:
  # 'alignment_ema', starting as uniform joint training); 'meta_gradient'
  # the exact meta-gradient.
  config.l2tl.mode = "recommended"
  # Source batch = src_oversample * B; the top B by weight are kept.
  config.l2tl.src_oversample = 2
  # Validation (reward) batch size (reference: 32 = 4 * B).
  config.l2tl.val_batch_size = config_dict.placeholder(int)
  # K: weight levels per source class, lambda = a / K.
  config.l2tl.num_levels = 100
  # lambda = a / class_weight_scale; None: K (reference, lambda < 1). K / 2:
  # up to about 2, starting at about 1 (uniform joint training's weight).
  config.l2tl.class_weight_scale = config_dict.placeholder(float)
  # Levels of the alpha categorical.
  config.l2tl.num_alpha_levels = 100
  # alpha = a / loss_weight_scale.
  config.l2tl.loss_weight_scale = 100.0
  # Policy Adam learning rate (reference: 0.01).
  config.l2tl.policy_lr = config_dict.placeholder(float)
  # Outer steps after which policy_lr is scaled.
  config.l2tl.policy_lr_boundaries = (800,)
  # Absolute multipliers of policy_lr.
  config.l2tl.policy_lr_scales = (0.1,)
  # Model steps per sampled action and reward (1: reference).
  config.l2tl.inner_steps = 1
  # 'unroll' or 'scan' (see L2TLOptions.inner_loop).
  config.l2tl.inner_loop = "unroll"
  # REINFORCE reward: 'accuracy' (reference), 'neg_loss' or
  # 'loss_improvement'.
  config.l2tl.reward = config_dict.placeholder(str)
  # EMA momentum of the reward baseline.
  config.l2tl.baseline_momentum = 0.9
  # 'reference' (EMA updated before the advantage) or 'previous'.
  config.l2tl.baseline_order = config_dict.placeholder(str)
  # 'mean' (reference) or 'sum' of per-class log-probs.
  config.l2tl.class_reduction = config_dict.placeholder(str)
  # Entropy bonus of the policy objective (reference: 0).
  config.l2tl.entropy_coef = 0.0
  # 'reference' (renormalised top-k weights / #non-zero) or 'mean'.
  config.l2tl.src_normalization = config_dict.placeholder(str)
  # Which B of the src_oversample * B source examples are kept: 'top_k'
  # (reference: the largest class weights) or 'first' (the first B, whose
  # weights only scale their losses: every class present gets a gradient).
  config.l2tl.src_selection = "top_k"
  # How the class weights are learned (l2tl_jax.estimators.ESTIMATORS):
  # 'alignment_ema' (recommended: a per-class EMA of each source example's
  # validation-gradient alignment, from uniform joint training),
  # 'alignment_reinforce' (the paper's policy with one alignment reward per
  # class), 'l2rw' (Learning to Reweight's per-example weights), 'reinforce'
  # (reference) or 'meta_gradient' (exact gradient of the validation loss
  # through the model update). The alignment ones keep alpha = fixed_alpha.
  config.l2tl.estimator = config_dict.placeholder(str)
  # Alignment estimators: the encoder's last top-level modules they
  # differentiate (2: LeNet fc1, fc2; ResNets the last two blocks of the last
  # stage, all of ResNet-18's); 0: all of it (the exact score).
  config.l2tl.score_layers = 2
  # Alignment estimators: momentum of the per-class EMAs.
  config.l2tl.alignment_momentum = 0.99
  # 'alignment_ema': outer steps at class weight 1 (uniform joint training).
  config.l2tl.warmup_steps = 100
  # 'alignment_ema': score every k-th outer step only (mode recommended: 4;
  # the others: 1).
  config.l2tl.score_every = config_dict.placeholder(int)
  # 'alignment_ema': 'step' (w_i = max(0, s_i) over the step's mean, Learning
  # to Reweight's rule) or 'run' (w_i = max(0, s_i); only the class EMAs'
  # ratio and the mean-1 scaling normalise).
  config.l2tl.alignment_normalize = "step"
  # REINFORCE samples per outer step; > 1: leave-one-out baseline.
  config.l2tl.num_samples = config_dict.placeholder(int)
  # How the samples are compiled: 'vmap' or 'unroll' (faster on XLA:CPU).
  config.l2tl.samples_loop = "vmap"
  # Class weights of method 'joint_fixed', one per source class in label
  # order (oracles: 1 for the relevant classes, 0 for the others).
  config.l2tl.fixed_class_weights = config_dict.placeholder(tuple)
  # alpha of 'l2tl_fixed_alpha', 'joint_uniform' and 'datl'.
  config.l2tl.fixed_alpha = 1.0

  config.eval = ml_collections.ConfigDict()
  # Batch size of full-split evaluation.
  config.eval.batch_size = 500
  # Validation accuracy every this many steps (curves and the
  # validation-selected checkpoint); 0 disables it.
  config.eval.every_steps = 100

  # Log metrics every this many steps.
  config.log_every_steps = 50
  # Checkpoint every this many steps (and at the end).
  config.checkpoint_every_steps = 200
  # Checkpoints kept.
  config.checkpoints_to_keep = 2
  # 'auto' ('mesh' with several devices, else 'jit'), 'jit' (one device),
  # 'mesh' (jit over a device mesh, data parallel) or 'pmap' (the same with
  # jax.pmap).
  config.parallelism = "auto"
  # Directory of cached source pre-trainings; None: <workdir>/pretrain.
  config.pretrain_cache_dir = config_dict.placeholder(str)
  # Benchmarks with a known answer: one 0/1 per source class in source label
  # order, 1 where the class is known to help the target. experiments.study
  # then adds the fixed-weight oracle rows and scores the learned weights
  # (ranking AUC, share of the oracle gap closed). No run reads it.
  config.source_class_relevance = config_dict.placeholder(tuple)
  # Draw a progress bar (steps/s, ETA) on stderr.
  config.progress_bar = True
  # Write PNG plots into <workdir>/plots at the end.
  config.write_plots = True

  # Several processes (hosts) training one run, data parallel over all their
  # devices ('mesh'); experiments.main starts jax.distributed before anything
  # else (l2tl_jax.distributed). Fields left None are read from
  # JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID; with none
  # of them set the run is one process. Every process gets the same flags;
  # process 0 writes the files (workdir and caches on a shared filesystem).
  config.distributed = ml_collections.ConfigDict()
  # 'host:port' of process 0's coordinator service.
  config.distributed.coordinator_address = config_dict.placeholder(str)
  # Number of processes of the run.
  config.distributed.num_processes = config_dict.placeholder(int)
  # This process's index in [0, num_processes).
  config.distributed.process_id = config_dict.placeholder(int)
  # Let JAX find the unset fields in a cluster job: None (no detection),
  # 'auto' (Slurm, Open MPI, Kubernetes, Cloud TPU), or one of
  # jax.distributed.initialize's cluster_detection_method names.
  config.distributed.cluster_detection = config_dict.placeholder(str)
  # Seconds a process waits for the coordinator and the other processes
  # before it stops with one error line (progress lines every 30 s).
  config.distributed.initialization_timeout = 300
  return config
