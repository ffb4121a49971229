"""experiments/l2tl_colab.ipynb runs headlessly on the tiny config."""

import json
import os
import sys

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
import nbformat
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO_ROOT, "experiments", "l2tl_colab.ipynb")
KERNEL_NAME = "l2tl-test-python"


def _kernel_manager(root: str) -> KernelManager:
  """A kernel manager whose kernel is this interpreter (the venv's)."""
  spec_dir = os.path.join(root, "kernels", KERNEL_NAME)
  os.makedirs(spec_dir)
  with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
    json.dump({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                 "{connection_file}"],
        "display_name": "l2tl test", "language": "python",
    }, f)
  specs = KernelSpecManager(kernel_dirs=[os.path.join(root, "kernels")])
  return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def test_notebook_is_valid_v4():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert nb.nbformat == 4
  assert all(c.cell_type == "markdown" or not c.outputs
             for c in nb.cells), "the notebook is stored without outputs"


@pytest.mark.slow
def test_notebook_runs_tiny_config(tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  monkeypatch.setenv("L2TL_NOTEBOOK_CONFIG", "tiny")
  monkeypatch.setenv("L2TL_NOTEBOOK_WORKDIR", str(workdir))
  monkeypatch.setenv("L2TL_NOTEBOOK_OVERRIDES", json.dumps({
      "data.data_dir": str(tmp_path / "tfds"),
      "train.steps": 10,
      "write_plots": False,  # The last cell draws them.
  }))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # Appended here only: which interpreter ran the notebook.
  nb.cells.append(
      nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
  client = NotebookClient(
      nb, km=_kernel_manager(str(tmp_path / "jupyter")), timeout=300,
      resources={"metadata": {"path": REPO_ROOT}})
  client.execute()  # Raises CellExecutionError on a failing cell.

  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert nb.cells[-1].outputs[0].text.strip() == sys.executable
  with open(workdir / "results.json") as f:
    results = json.load(f)
  assert results["status"] == "completed"
  assert results["method"] == "l2tl" and results["steps"] == 10
  # The provenance cell names the device, the data and the run directory.
  text = "".join(o.get("text", "") for o in outputs)
  assert "device: " in text and f"run directory: {workdir}" in text
  for name, where in results["task"]["resolved"].items():
    assert f"data {name}: {where}" in text
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  # Class weights, alpha (fixed under the recommended estimator), accuracy;
  # no reward: the recommended estimator learns without one.
  assert len(images) == 3
  assert sorted(os.listdir(workdir / "plots")) == [
      "accuracy.png", "alpha.png", "class_weights.png"]
