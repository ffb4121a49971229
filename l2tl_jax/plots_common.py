"""What every PNG of this project shares: the figure and the atomic save.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas, so no
pyplot state is created or leaked and no display is needed. Every file is
written to a temporary name in its directory, then renamed.
"""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from l2tl_jax import atomic


def new_figure(width: float, height: float) -> Figure:
  """An empty figure of width x height inches on an Agg canvas."""
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig


def save_figure(fig: Figure, path: str) -> str:
  """Saves `fig` as a PNG at `path`, atomically, with the umask's mode.

  Args:
    fig: the figure.
    path: destination file; its directory is created if missing.

  Returns:
    `path`.
  """
  with atomic.writer(path, "wb", suffix=".png") as f:
    fig.savefig(f, format="png", bbox_inches="tight")
  return path
