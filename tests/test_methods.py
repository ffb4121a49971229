"""The methods table: what each method builds and reports."""

import pytest

from l2tl_jax import methods


def test_what_each_method_builds():
  table = {name: (m.init, m.joint, m.has_policy, m.heads, m.loaded_parts,
                  m.default_decay_set)
           for name, m in methods.METHODS.items()}
  src_tgt = ("src_head", "tgt_head")
  assert table == {
      "scratch": ("scratch", False, False, ("tgt_head",), (), "kernels"),
      "finetune": ("pretrained", False, False, ("tgt_head",), ("encoder",),
                   "kernels"),
      "joint_uniform": ("pretrained", True, False, src_tgt,
                        ("encoder", "src_head"), "all"),
      "datl": ("pretrained", True, False, src_tgt, ("encoder", "src_head"),
               "all"),
      "joint_fixed": ("pretrained", True, False, src_tgt,
                      ("encoder", "src_head"), "all"),
      "l2tl_fixed_alpha": ("pretrained", True, True, src_tgt,
                           ("encoder", "src_head"), "all"),
      "l2tl": ("pretrained", True, True, src_tgt, ("encoder", "src_head"),
               "all"),
  }
  assert [n for n, m in methods.METHODS.items() if m.learns_alpha] == ["l2tl"]


def test_report_rows():
  assert list(methods.report_rows("datl")) == ["datl"]
  rows = methods.report_rows("l2tl")
  assert list(rows) == ["l2tl", "l2tl (val-selected)"]
  assert rows["l2tl (val-selected)"].startswith("as l2tl, plus the validation")
  assert "target train only" in methods.report_rows("finetune")["finetune"]


def test_unknown_method_and_bad_entries():
  with pytest.raises(ValueError, match="config.method must be one of"):
    methods.get("l2tl_v2")
  with pytest.raises(ValueError, match="class_weights"):
    methods.Method("x", "scratch", "random")
  with pytest.raises(ValueError, match="init"):
    methods.Method("x", "imagenet", "none")
