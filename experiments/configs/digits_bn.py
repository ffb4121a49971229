r"""digits with a batch-norm encoder: how config.model.bn_mode matters.

  for mode in joint target frozen; do
    python -m experiments.compare --config=experiments/configs/digits_bn.py \
        --seeds=3 --methods=finetune,joint_uniform,l2tl \
        --workdir=runs/digits_bn/$mode --config.model.bn_mode=$mode \
        --config.pretrain_cache_dir=runs/digits_bn/pretrain \
        --config.l2tl.mode=meta_gradient
  done

Protocol: as experiments/configs/digits.py (mnist_5k -> uci_digits 1..5 mod
5, 10 per class to train, 50 to validation), with the CIFAR-style ResNet
(batch norm; widths 8, 16, 32, one block per stage) instead of LeNet and
1000 pre-training steps. One pre-training serves the three modes.

Measured (2-core CPU, seeds 0..2, test accuracy % on 605 images, mean ±
sample std; validation accuracy in brackets; l2tl with the meta-gradient, then the recommended mode):

  bn_mode   finetune             joint_uniform        l2tl
  joint     80.55 ± 0.48 (79.7)  88.98 ± 0.63 (90.1)  84.35 ± 2.68 (83.5)
  target    80.55 ± 0.48 (79.7)  84.35 ± 3.24 (84.4)  83.91 ± 0.67 (83.2)
  frozen    80.28 ± 2.22 (80.5)  88.26 ± 2.62 (86.0)  87.77 ± 0.76 (87.6)

Per seed: joint 80.00/80.83/80.83, 88.26/89.42/89.26, 82.64/82.98/87.44;
target 80.00/80.83/80.83, 81.32/87.77/83.97, 83.31/83.80/84.63; frozen
79.34/78.68/82.81, 91.24/87.27/86.28, 86.94/87.93/88.43. Statistics from
the target examples only ('target') lose 3-5 points of validation accuracy
in the joint methods; 'joint' and 'frozen' tie on validation accuracy
averaged over the joint methods (86.8 each), so the default stays 'joint'
(the reference). Fine-tuning sees one data stream: 'joint' and 'target'
are the same step there.
"""

from experiments.configs import digits


def get_config():
  config = digits.get_config()
  config.model.encoder = "resnet"
  config.model.encoder_kwargs.widths = (8, 16, 32)
  config.model.encoder_kwargs.blocks_per_stage = 1
  config.pretrain.steps = 1000
  config.pretrain.lr_boundaries = (250, 750)
  return config
