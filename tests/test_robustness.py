"""Bad input, damaged state and concurrent writers: clear errors, no damage.

Fast tests check each mechanism directly; the slow ones run the tiny config
end to end (a resumed run whose data changed, a deliberately changed config,
damaged cache entries, the console of the launcher).
"""

import json
import logging
import os
import re
import subprocess
import sys

import chex
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest

from experiments import cli
from experiments.configs import folder as folder_config
from experiments.configs import tiny
from l2tl_jax import checkpointing
from l2tl_jax import data
from l2tl_jax import loop
from l2tl_jax import pretrain
from l2tl_jax import spec as spec_lib
from l2tl_jax import train
from l2tl_jax import validation
from l2tl_jax import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path, **overrides):
  config = tiny.get_config()
  config.data.data_dir = str(tmp_path / "tfds")
  config.write_plots = False
  config.progress_bar = False
  config.update_from_flattened_dict(overrides)
  return config


# --- The config is checked completely before anything is written. ---


def test_every_bad_field_is_named_at_once(tmp_path):
  config = train.resolve_config(_config(
      tmp_path, **{"train.lr": -0.1, "train.batch_size": 0,
                   "pretrain.batch_size": -3, "l2tl.policy_lr": -1.0,
                   "eval.every_steps": -1}))
  config.method = "magic"
  with pytest.raises(validation.ConfigError) as info:
    spec_lib.from_config(config)
  message = str(info.value)
  assert message.startswith("6 config field(s) cannot be used")
  for text in ("config.method must be one of", "config.train.lr must be >= 0",
               "config.train.batch_size must be >= 1, got 0",
               "config.pretrain.batch_size must be >= 1, got -3",
               "config.l2tl.policy_lr must be >= 0",
               "config.eval.every_steps must be >= 0"):
    assert text in message


def test_types_schedules_and_options_are_checked(tmp_path):
  # A config file may build fields of any type (ml_collections only keeps
  # the type of an existing field).
  config = ml_collections.ConfigDict(
      train.resolve_config(_config(tmp_path)).to_dict(), type_safe=False)
  config.train.steps = 2.5
  config.train.lr_boundaries = (10, 5)
  config.train.lr_scales = (0.1, 0.01)
  with pytest.raises(validation.ConfigError,
                     match=r"config.train.steps must be an integer, got 2.5.*"
                     r"config.train.lr_boundaries must be increasing"):
    spec_lib.from_config(config)
  config = train.resolve_config(_config(tmp_path, **{"l2tl.reward": "top5"}))
  with pytest.raises(validation.ConfigError, match="config.l2tl: reward"):
    spec_lib.from_config(config)


def test_a_failed_start_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(validation.ConfigError):
    train.train_and_evaluate(_config(tmp_path, **{"train.lr": -1.0}),
                             str(workdir))
  assert not workdir.exists()
  # A data error (a typo in a dataset name) leaves no config.json, so the
  # corrected command is not refused as "a different config".
  config = _config(tmp_path)
  config.data.target = "uci_digitz"
  with pytest.raises(data.DataError):
    train.train_and_evaluate(config, str(workdir))
  assert not (workdir / "config.json").exists()


# --- One writer per workdir and per cache entry. ---


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
  workdir = tmp_path / "run"
  with checkpointing.exclusive_lock(str(workdir / ".lock"), what="Workdir x"):
    with pytest.raises(checkpointing.LockedError,
                       match=rf"in use by process {os.getpid()}"):
      train.train_and_evaluate(_config(tmp_path), str(workdir))
  # Released with its holder: taking it again works.
  with checkpointing.exclusive_lock(str(workdir / ".lock"), what="Workdir x"):
    pass


def test_a_lock_held_by_a_dead_process_is_free(tmp_path):
  path = str(tmp_path / ".lock")
  code = ("from l2tl_jax import checkpointing\n"
          f"with checkpointing.exclusive_lock({path!r}, what='x'):\n"
          "  import os; os._exit(0)\n")  # Dies holding it.
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
  with checkpointing.exclusive_lock(path, what="x"):
    pass


# --- Integrity of checkpoints, caches and the metrics log. ---


def _state(value):
  return {"w": jnp.full((3,), value, jnp.float32)}


def _saved(directory, steps=(1, 2)):
  ckpt = checkpointing.Checkpointer(directory, max_to_keep=3)
  for step in steps:
    ckpt.save(step, state=_state(float(step)), best=_state(0.0),
              host={"step": step})
  return ckpt


def _a_file(step_dir, name="state"):
  for root, _, files in os.walk(os.path.join(step_dir, name)):
    for f in files:
      path = os.path.join(root, f)
      if os.path.getsize(path) > 8:
        return path
  raise AssertionError("no data file")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(
    tmp_path, damage, caplog):
  directory = str(tmp_path / "ckpt")
  ckpt = _saved(directory)
  path = _a_file(ckpt.step_dir(2))
  with open(path, "r+b") as f:
    if damage == "flip":
      byte = f.read(1)
      f.seek(0)
      f.write(bytes([byte[0] ^ 1]))
    else:
      f.truncate(4)
  step, state, _, host = ckpt.restore_latest_good(state=_state(0.0),
                                                  best=_state(0.0))
  assert (step, host) == (1, {"step": 1})
  chex.assert_trees_all_equal(state, _state(1.0))
  assert ckpt.latest_step() == 1
  moved = [n for n in os.listdir(directory) if n.startswith("2.damaged-")]
  assert len(moved) == 1
  assert "damaged" in caplog.text and ckpt.step_dir(1) in caplog.text
  # Saving goes on from the good step.
  ckpt.save(2, state=_state(5.0), best=_state(0.0), host={"step": 2})
  assert ckpt.restore_latest_good(state=_state(0.0), best=_state(0.0))[0] == 2
  ckpt.close()


def test_every_checkpoint_damaged_is_an_error(tmp_path):
  ckpt = _saved(str(tmp_path / "ckpt"), steps=(1,))
  os.remove(_a_file(ckpt.step_dir(1)))
  with pytest.raises(checkpointing.DamagedError, match="Every checkpoint"):
    ckpt.restore_latest_good(state=_state(0.0), best=_state(0.0))


def test_an_intact_checkpoint_of_other_arrays_is_never_moved(tmp_path):
  directory = str(tmp_path / "ckpt")
  ckpt = _saved(directory)
  before = sorted(os.listdir(directory))
  other = {"w": jnp.zeros((4,)), "v": jnp.zeros(())}
  with pytest.raises(checkpointing.IncompatibleError) as info:
    ckpt.restore_latest_good(state=other, best=_state(0.0))
  assert info.value.step == 2
  assert info.value.differences == [
      "state: 1 array(s) this run needs are not in it: v",
      "state: w has shape (3,) there, (4,) here"]
  assert sorted(os.listdir(directory)) == before  # Nothing moved aside.
  # The run's own structure still restores the newest step.
  assert ckpt.restore_latest_good(state=_state(0.0), best=_state(0.0))[0] == 2
  ckpt.close()


def test_storage_errors_become_os_errors(tmp_path, monkeypatch):
  # The text tensorstore gives for a full disk during an orbax save.
  text = ('RESOURCE_EXHAUSTED: Error writing "0.w/0.0" in OCDBT database at '
          'local file "/x/20.orbax-checkpoint-tmp/": Failed to write 2830 '
          "bytes to file 20: No space left on device [os_error_code='28']")
  e = checkpointing.as_os_error(ValueError(text), "/x/20")
  assert isinstance(e, OSError) and e.errno == 28
  assert e.strerror == os.strerror(28) and e.filename == "/x/20"
  assert checkpointing.as_os_error(ValueError("shape mismatch"), "/x") is None
  ckpt = _saved(str(tmp_path / "ckpt"), steps=(1,))

  def full(*args, **kwargs):
    raise ValueError(text)

  monkeypatch.setattr(ckpt._manager, "save", full)  # pylint: disable=protected-access
  with pytest.raises(OSError, match="No space left on device"):
    ckpt.save(2, state=_state(2.0), best=_state(0.0), host={})


def test_checksums_name_what_changed(tmp_path):
  d = tmp_path / "entry"
  (d / "sub").mkdir(parents=True)
  (d / "a.bin").write_bytes(b"abc")
  (d / "sub" / "b.bin").write_bytes(b"xyz")
  checkpointing.write_checksums(str(d))
  assert checkpointing.verify(str(d)) is None
  (d / "a.bin").write_bytes(b"abd")
  os.remove(d / "sub" / "b.bin")
  assert checkpointing.verify(str(d)) == "missing sub/b.bin; changed a.bin"


def test_a_torn_last_metrics_line_is_dropped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "x": 1.0}\n{"step": 2, "x": 2.0}\n{"step": 3, "x"')
  loop.truncate_jsonl(str(path), 5)
  assert path.read_text() == '{"step": 1, "x": 1.0}\n{"step": 2, "x": 2.0}\n'
  path.write_text('{"step": 1}\n{"step\n{"step": 3}\n')
  with pytest.raises(data.DataError, match="line 2 is damaged"):
    loop.truncate_jsonl(str(path), 5)


def test_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    checkpointing.write_json_atomic(str(tmp_path / "r.json"), {"a": 1})
    checkpointing.write_text_atomic(str(tmp_path / "s.md"), "x")
  finally:
    os.umask(old)
  assert oct(os.stat(tmp_path / "r.json").st_mode & 0o777) == oct(0o644)
  assert oct(os.stat(tmp_path / "s.md").st_mode & 0o777) == oct(0o644)


def test_plots_and_downloads_follow_the_umask(tmp_path):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from l2tl_jax import atomic  # pylint: disable=g-import-not-at-top
  from l2tl_jax import plots_common  # pylint: disable=g-import-not-at-top

  where = tmp_path / "downloads"
  old = os.umask(0o027)
  try:
    png = plots_common.save_figure(Figure(),
                                   str(tmp_path / "plots" / "p.png"))
    # The IDX download's write (data/kinds/catalog.download_idx): kept...
    with atomic.writer(str(where / "a.gz"), "wb", prefix=".part-") as out:
      out.write(b"idx bytes")
    # ... or, when its checksum is refused inside the block, not kept.
    with pytest.raises(data.DataError):
      with atomic.writer(str(where / "b.gz"), "wb", prefix=".part-") as out:
        out.write(b"other bytes")
        raise data.DataError("not the recorded bytes")
  finally:
    os.umask(old)
  assert os.listdir(where) == ["a.gz"]  # No temporary file left.
  assert (where / "a.gz").read_bytes() == b"idx bytes"
  for path in (png, where / "a.gz"):
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o640), path


# --- Errors a person can act on. ---


def test_os_errors_name_the_path(tmp_path, capsys):
  workdir = tmp_path / "a_file"
  workdir.write_text("not a directory")
  with pytest.raises(SystemExit) as info:
    cli.run_or_exit(train.train_and_evaluate, _config(tmp_path), str(workdir))
  assert info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: cannot write") and str(workdir) in err
  assert len(err.splitlines()) == 1


def test_an_empty_workdir_is_refused(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  for workdir in ("", "  "):
    with pytest.raises(validation.ConfigError, match="workdir is empty"):
      train.train_and_evaluate(_config(tmp_path), workdir)
  assert os.listdir(tmp_path) == []


def test_a_finished_run_is_read_without_writing(tmp_path):
  config = train.resolve_config(_config(tmp_path))
  workdir = tmp_path / "run"
  workdir.mkdir()
  workdir_lib.save_config(spec_lib.from_config(config).config, str(workdir), {})
  (workdir / "results.json").write_text('{"status": "completed"}')
  before = sorted(os.listdir(workdir))
  assert train.train_and_evaluate(config, str(workdir)) == {
      "status": "completed"}
  assert sorted(os.listdir(workdir)) == before  # No lock file either.


def test_structural_changes_are_refused_before_anything_changes(tmp_path):
  config = train.resolve_config(_config(tmp_path, method="l2tl"))
  workdir = tmp_path / "run"
  workdir.mkdir()
  workdir_lib.save_config(spec_lib.from_config(config).config, str(workdir), {})
  saved = (workdir / "config.json").read_bytes()
  for field, value in (("method", "joint_uniform"),
                       ("model.encoder_kwargs.hidden", 64),
                       ("l2tl.mode", "reference")):
    changed = _config(tmp_path, **{"method": "l2tl", field: value})
    with pytest.raises(train.ConfigMismatchError,
                       match=rf"another method or architecture \(.*{field}:"):
      train.train_and_evaluate(changed, str(workdir), accept_changes=(field,))
  assert (workdir / "config.json").read_bytes() == saved
  assert sorted(os.listdir(workdir)) == ["config.json"]


def test_a_nonfinite_evaluation_stops_the_run():
  loop.check_finite_eval({"loss": 0.5, "accuracy": 0.9}, "validation", 3,
                         "l2tl")
  for loss in (float("nan"), float("inf")):
    with pytest.raises(train.NonFiniteError,
                       match=r"validation loss of l2tl is (nan|inf) at step 3"):
      loop.check_finite_eval({"loss": loss, "accuracy": 0.1},
                             "validation", 3, "l2tl")


# --- End to end. ---


def _images(root, classes=("a", "b"), per_class=12):
  rs = np.random.RandomState(0)
  for c in classes:
    os.makedirs(root / c, exist_ok=True)
    for i in range(per_class):
      Image.fromarray(rs.randint(0, 255, (8, 8, 3), np.uint8)).save(
          root / c / f"{i}.png")


@pytest.mark.slow
def test_data_changed_between_kill_and_resume_is_refused(tmp_path):
  images = tmp_path / "images"
  _images(images)
  config = folder_config.get_config(str(images))
  config.data.data_dir = str(tmp_path / "tfds")
  config.update_from_flattened_dict({
      "method": "scratch", "train.steps": 4, "train.batch_size": 2,
      "checkpoint_every_steps": 2, "eval.every_steps": 0,
      "data.target_train_per_class": 2, "data.target_val_per_class": 2,
      "write_plots": False, "progress_bar": False})
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir))
  os.remove(workdir / "results.json")  # As if killed after the last save.
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a" / "0.png")
  with pytest.raises(data.DataError, match="data of the run .* changed"):
    train.train_and_evaluate(config, str(workdir))


@pytest.mark.slow
def test_a_changed_config_continues_only_when_accepted(tmp_path):
  config = _config(tmp_path, **{"method": "finetune", "train.steps": 6,
                                "checkpoint_every_steps": 3})
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  os.remove(os.path.join(workdir, "results.json"))
  config.train.lr = 0.001
  with pytest.raises(train.ConfigMismatchError,
                     match="--accept_changes=train.lr"):
    train.train_and_evaluate(config, workdir)
  results = train.train_and_evaluate(config, workdir,
                                     accept_changes=("train.lr",))
  assert results["config"]["train"]["lr"] == 0.001
  with open(os.path.join(workdir, "config_changes.jsonl")) as f:
    change = json.loads(f.readline())
  assert change["changes"] == {"train.lr": [0.02, 0.001]}


@pytest.mark.slow
def test_a_failed_resume_leaves_the_saved_run_as_it_was(tmp_path, caplog):
  config = _config(tmp_path, **{"method": "l2tl", "l2tl.mode": "reference",
                                "train.steps": 20,
                                "checkpoint_every_steps": 10})
  workdir = tmp_path / "run"
  done = train.train_and_evaluate(config, str(workdir))
  os.remove(workdir / "results.json")  # As if killed after the last save.
  listing = lambda: sorted(os.listdir(workdir)) + sorted(
      os.listdir(workdir / "checkpoints"))
  saved, files = (workdir / "config.json").read_bytes(), listing()
  # An accepted change that alters the policy's arrays: refused at the
  # restore, no checkpoint moved aside, config.json as it was.
  levels = _config(tmp_path, **{"method": "l2tl", "l2tl.mode": "reference",
                                "train.steps": 20, "l2tl.num_levels": 5,
                                "checkpoint_every_steps": 10})
  with pytest.raises(train.ConfigMismatchError,
                     match=r"incompatible with the saved run: the accepted "
                     r"change\(s\) l2tl.num_levels alter"):
    train.train_and_evaluate(levels, str(workdir),
                             accept_changes=("l2tl.num_levels",))
  # An accepted change of the data: refused, nothing rewritten.
  fewer = _config(tmp_path, **{"method": "l2tl", "l2tl.mode": "reference",
                               "train.steps": 20, "checkpoint_every_steps": 10,
                               "data.target_train_per_class": 5})
  with pytest.raises(data.DataError, match="changed since it started"):
    train.train_and_evaluate(fewer, str(workdir), accept_changes=(
        "data.target_train_per_class",))
  assert (workdir / "config.json").read_bytes() == saved
  assert not (workdir / "config_changes.jsonl").exists()
  assert listing() == files
  # Fewer steps than the checkpoint's: said, and nothing trained.
  shorter = _config(tmp_path, **{"method": "l2tl", "l2tl.mode": "reference",
                                 "train.steps": 10,
                                 "checkpoint_every_steps": 10})
  results = train.train_and_evaluate(shorter, str(workdir),
                                     accept_changes=("train.steps",))
  assert "past config.train.steps=10" in caplog.text
  assert results["steps"] == 20
  assert results["test_accuracy"] == done["test_accuracy"]


@pytest.mark.slow
def test_a_batch_above_the_target_train_set_is_noted(tmp_path, caplog):
  config = _config(tmp_path, **{"method": "finetune", "train.steps": 2,
                                "train.batch_size": 64,
                                "eval.every_steps": 0})
  train.train_and_evaluate(config, str(tmp_path / "run"))
  assert ("config.train.batch_size=64 is above the 50 target train "
          "examples") in caplog.text


@pytest.mark.slow
def test_a_damaged_cache_entry_is_rebuilt(tmp_path, caplog):
  spec = spec_lib.from_config(_config(tmp_path))
  task = data.build_task(spec.data)
  par = train.parallel.Parallelism()
  cache = str(tmp_path / "cache")
  params, _, info = pretrain.pretrained(spec, task, cache, par)
  path = _a_file(info["path"], "variables")
  with open(path, "r+b") as f:
    f.write(b"\0\0\0\0")
  again, _, info2 = pretrain.pretrained(spec, task, cache, par)
  assert "damaged" in caplog.text
  chex.assert_trees_all_equal(again, params)  # Rebuilt identically.
  assert info2["path"] == info["path"]
  assert any(".damaged-" in n for n in os.listdir(cache))


@pytest.mark.slow
def test_launcher_console_is_quiet_and_errors_are_one_line(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  base = [sys.executable, "-m", "experiments.main",
          "--config=experiments/configs/tiny.py",
          f"--config.data.data_dir={tmp_path / 'tfds'}"]
  run = subprocess.run(
      base + [f"--workdir={tmp_path / 'run'}", "--config.progress_bar=False",
              "--config.write_plots=False"],
      capture_output=True, text=True, cwd=REPO, env=env, check=True)
  console = (run.stdout + run.stderr).splitlines()
  absl_prefixed = [l for l in console if re.match(r"^[IWEF]\d{4} ", l)]
  assert not absl_prefixed, absl_prefixed[:3]
  text = "\n".join(console)
  for stage in ("Data ready:", "Pre-training on", "done:"):
    assert stage in text
  # Lines, not progress-bar redraws (their number depends on speed).
  lines = [l for l in console
           if l.strip() and not re.search(r"\d+%\|.*\|", l)]
  assert len(lines) < 12, lines
  log = (tmp_path / "run" / "l2tl.log").read_text()
  assert "Load dataset info" in log or "checkpoint" in log.lower()
  bad = subprocess.run(
      base + [f"--workdir={tmp_path / 'bad'}", "--config.trian.steps=3"],
      capture_output=True, text=True, cwd=REPO, env=env)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      "error: bad config override --config.trian.steps: 'trian' is not a "
      "field of the config. Did you mean \"train\" instead of \"trian\"? "
      "See --help."]
  neg = subprocess.run(
      base + [f"--workdir={tmp_path / 'neg'}", "--config.train.lr=-0.1"],
      capture_output=True, text=True, cwd=REPO, env=env)
  assert neg.returncode == 2
  assert neg.stderr.strip().splitlines() == [
      "error: 1 config field(s) cannot be used: config.train.lr must be >= 0,"
      " got -0.1. Fix them (--config.FIELD=VALUE) and rerun."]
  assert not (tmp_path / "neg").exists()


def test_a_workdir_inside_the_image_folder_is_refused(tmp_path):
  images = tmp_path / "images"
  _images(images, per_class=2)
  config = folder_config.get_config(str(images))
  config.data.data_dir = str(tmp_path / "tfds")
  with pytest.raises(data.DataError, match="inside"):
    train.train_and_evaluate(config, str(images / "a" / "run"))
  assert sorted(os.listdir(images / "a")) == ["0.png", "1.png"]


def test_a_log_file_that_cannot_be_written_is_dropped_quietly(tmp_path,
                                                              capsys):
  handler = cli._WorkdirLog(str(tmp_path))  # pylint: disable=protected-access

  class Full:
    def write(self, line):
      raise OSError(28, "No space left on device")

    def close(self):
      pass

  handler.file = Full()
  record = logging.LogRecord("x", logging.ERROR, __file__, 1, "msg", (), None)
  handler.emit(record)
  handler.emit(record)  # Dropped: no second attempt, no traceback.
  assert handler.path == os.devnull  # Later records go nowhere.
  assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_is_one_line(tmp_path):
  small = tmp_path / "small"
  small.mkdir()
  mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs",
                          str(small)], capture_output=True)
  if mount.returncode:
    pytest.skip("a small tmpfs cannot be mounted here (needs root)")
  try:
    run = subprocess.run(
        [sys.executable, "-m", "experiments.main",
         "--config=experiments/configs/tiny.py", "--config.method=l2tl",
         f"--config.data.data_dir={tmp_path / 'tfds'}",
         f"--workdir={small / 'w'}"],
        capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  finally:
    subprocess.run(["umount", str(small)], check=False)
  assert run.returncode == 2, run.stderr[-2000:]
  # One error line of ours. The storage library's writer threads may still
  # print their own tracebacks around it (asyncio "Event loop is closed",
  # from threads outside this process's control); their text is not ours.
  errors = [l for l in run.stderr.splitlines() if "error: " in l]
  assert len(errors) == 1 and "No space left on device" in errors[0], errors
