"""experiments.main on tfds.testing.mock_data (for tests, offline).

  python tests/mock_tfds_main.py NUM_EXAMPLES --config=... --workdir=...

Every TFDS catalog dataset serves NUM_EXAMPLES random examples with its real
features (deterministic: the same in every process).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
import tensorflow_datasets as tfds

from experiments import cli
from experiments import main

if __name__ == "__main__":
  num_examples = int(sys.argv.pop(1))
  with tfds.testing.mock_data(num_examples=num_examples):
    app.run(main.main, flags_parser=cli.parse_flags)
