"""l2tl_jax/saved_run.py, l2tl_jax/predict.py and experiments/predict.py.

Fast tier: runs written by hand (a config.json, checkpoints saved by the
Checkpointer, a results.json) so that every path of loading, predicting,
scoring and the bad inputs is checked without training. Slow tier: the tiny
config trained end to end, its test split written out as PNG class folders
and predicted (the run's test accuracy reproduced exactly), and the command
line in subprocesses.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
from PIL import Image
import pytest

from experiments import predict as predict_cli
from experiments.configs import tiny
from l2tl_jax import build
from l2tl_jax import checkpointing
from l2tl_jax import data
from l2tl_jax import models
from l2tl_jax import predict
from l2tl_jax import saved_run
from l2tl_jax import spec as spec_lib
from l2tl_jax.data import preprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("cat", "dog", "bird")


def fake_config(**model):
  """The tiny config (LeNet, 32x32 gray), model fields overridden."""
  config = tiny.get_config()
  for key, value in model.items():
    config.model[key] = value
  return config


def _variables(config, image_shape, num_classes, seed):
  model = build.make_model(
      spec_lib.model_spec(config.model), heads=("tgt_head",),
      shapes=build.Shapes(image_shape, 0, num_classes))
  params, model_state = models.init_variables(model, jax.random.key(seed),
                                              image_shape)
  return jax.device_get(params), jax.device_get(model_state)


def fake_run(workdir, *, config=None, class_names=CLASSES, steps=(20, 40),
             best_step=20, results=True, image_shape=(32, 32, 1),
             variables=None):
  """A run's workdir as train_and_evaluate leaves it, without training.

  Each checkpoint step s holds params initialised with seed s ('state') and
  the params of `best_step` ('best'); host['best']['step'] = best_step (0:
  nothing selected).

  Returns:
    {step: (params, model_state)} of what was saved ('best' under
    'best').
  """
  config = config or fake_config()
  os.makedirs(workdir, exist_ok=True)
  checkpointing.write_json_atomic(
      os.path.join(workdir, "config.json"),
      json.loads(config.to_json_best_effort()))
  saved = {}
  make = variables or (lambda seed: _variables(config, image_shape,
                                               len(class_names), seed))
  best = make(best_step)
  saved["best"] = best
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    max_to_keep=len(steps))
  for step in steps:
    params, model_state = saved[step] = make(step)
    ckpt.save(step, state={"step": np.int32(step), "params": params,
                           "model_state": model_state},
              best=best, host={"best": {"step": best_step,
                                        "val_accuracy": 0.75}})
  ckpt.close()
  if results:
    checkpointing.write_json_atomic(os.path.join(workdir, "results.json"), {
        "status": "completed", "steps": steps[-1],
        "tgt_class_names": list(class_names),
        "task": {"image_shape": list(image_shape)},
        "val_selected": {"step": best_step or steps[-1]}})
  return saved


@pytest.fixture(name="run_dir")
def _run_dir(tmp_path):
  workdir = str(tmp_path / "run")
  fake_run(workdir)
  return workdir


def _png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  array = np.asarray(array, np.uint8)
  Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
  return path


def _logits(run, images):
  params = run.variables["params"]
  model_state = {k: v for k, v in run.variables.items() if k != "params"}
  features, _ = models.apply_encoder(run.model, params, model_state, images,
                                     train=False)
  return models.apply_head(run.model, params, features, "tgt")


# ------------------------------------------------------------- load_run


def test_load_run_final_and_val_selected(tmp_path):
  workdir = str(tmp_path / "run")
  saved = fake_run(workdir)
  final = saved_run.load_run(workdir)
  assert final.class_names == CLASSES
  assert final.image_shape == (32, 32, 1) and final.step == 40
  assert final.spec == preprocess.ImageSpec(32, 1, "auto")
  assert final.normalization == "unit" and final.notes == ()
  chex.assert_trees_all_equal(final.variables["params"], saved[40][0])
  selected = saved_run.load_run(workdir, params="val_selected")
  assert selected.step == 20 and selected.params == "val_selected"
  chex.assert_trees_all_equal(selected.variables["params"],
                              saved["best"][0])


def test_val_selected_equal_to_the_final_params_is_a_warning(tmp_path):
  workdir = str(tmp_path / "run")
  fake_run(workdir, best_step=40)
  run = saved_run.load_run(workdir, params="val_selected")
  assert run.step == 40
  assert run.notes == ("The best validation accuracy (0.7500) was at the "
                       "last evaluation, step 40: the val_selected params are "
                       "the final ones.",)


def test_val_selected_without_selection_is_an_error(tmp_path):
  # No periodic evaluation: 'best' holds the initial params, never usable.
  workdir = str(tmp_path / "run")
  config = fake_config()
  config.eval.every_steps = 0
  fake_run(workdir, config=config, best_step=0)
  with pytest.raises(saved_run.RunError) as e:
    saved_run.load_run(workdir, params="val_selected")
  message = str(e.value)
  assert "\n" not in message
  assert "config.eval.every_steps=0: no periodic evaluation" in message
  assert message.endswith("use the final ones (--params=final).")
  assert saved_run.load_run(workdir).step == 40  # The final ones are there.


@pytest.mark.parametrize("case, expected", [
    ("missing", "no such directory"),
    ("empty", "holds no finished run (results.json) and no checkpoint"),
    ("no_checkpoints", "finished, but its checkpoints"),
    ("no_config", "holds checkpoints but no config.json"),
])
def test_no_usable_run_is_one_line(tmp_path, case, expected):
  workdir = str(tmp_path / "run")
  if case == "empty":
    os.makedirs(workdir)
  elif case in ("no_checkpoints", "no_config"):
    fake_run(workdir)
    if case == "no_checkpoints":
      shutil.rmtree(os.path.join(workdir, "checkpoints"))
    else:
      os.remove(os.path.join(workdir, "config.json"))
  with pytest.raises(saved_run.RunError, match=re.escape(expected)) as e:
    saved_run.load_run(workdir)
  assert "\n" not in str(e.value)


def test_a_run_of_another_version_is_one_line(tmp_path):
  # Saved arrays that the model of its config.json does not have.
  workdir = str(tmp_path / "run")
  other = fake_config()
  other.model.encoder_kwargs.hidden = 64
  fake_run(workdir, variables=lambda seed: _variables(other, (32, 32, 1), 3,
                                                      seed))
  with pytest.raises(saved_run.RunError) as e:
    saved_run.load_run(workdir)
  message = str(e.value)
  assert "\n" not in message
  assert "saved by another version of l2tl_jax" in message
  assert ("params.encoder.fc1.kernel has shape (512, 64) there, (512, 32) "
          "here") in message
  # A config.json this version cannot build (an encoder it does not know).
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  saved["model"]["encoder"] = "lenet_v9"
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(saved, f)
  with pytest.raises(saved_run.RunError, match="Unknown encoder 'lenet_v9'"):
    saved_run.load_run(workdir)


def test_a_damaged_latest_step_is_passed_over_and_kept(tmp_path):
  workdir = str(tmp_path / "run")
  saved = fake_run(workdir)
  step_dir = os.path.join(workdir, "checkpoints", "40")
  with open(os.path.join(step_dir, "l2tl_checksums.json")) as f:
    damaged = os.path.join(step_dir, sorted(json.load(f))[-1])
  with open(damaged, "ab") as f:
    f.write(b"\0")
  run = saved_run.load_run(workdir)
  assert run.step == 20
  chex.assert_trees_all_equal(run.variables["params"], saved[20][0])
  assert len(run.notes) == 2
  assert run.notes[0].startswith("Checkpoint step 40 (changed ")
  assert run.notes[1] == (f"results.json of {workdir} is of step 40; its "
                          "checkpoint of that step is damaged or gone: using "
                          "step 20.")
  assert os.path.isdir(step_dir)  # Prediction changes nothing.


def test_an_unfinished_run_takes_class_names_from_its_data(tmp_path):
  # Without results.json the names come from config.data (a folder here).
  root = tmp_path / "images"
  for name in ("ant", "bee"):
    _png(str(root / name / "a.png"), np.full((8, 8, 1), 7))
  config = fake_config()
  config.data.target = f"folder:{root}"
  config.data.target_classes = None
  config.data.target_label_mod = None
  config.data.data_dir = str(tmp_path / "tfds")
  workdir = str(tmp_path / "run")
  fake_run(workdir, config=config, class_names=("ant", "bee"), results=False)
  run = saved_run.load_run(workdir)
  assert run.class_names == ("ant", "bee")
  assert run.notes == (f"The run in {workdir} is not finished (no "
                       "results.json): using checkpoint step 40 of 40.",)


# ------------------------------------------------------- predict_fn, images


def test_predict_fn_is_softmax_of_the_target_logits(run_dir):
  run = saved_run.load_run(run_dir)
  images = np.random.default_rng(0).random((4, 32, 32, 1), np.float32)
  probs = predict.make_predict_fn(run.model)(run.variables, images)
  chex.assert_shape(probs, (4, 3))
  chex.assert_trees_all_close(probs, jax.nn.softmax(_logits(run, images)),
                              atol=1e-6)
  chex.assert_trees_all_close(probs.sum(-1), np.ones(4), atol=1e-6)


def test_predict_files_batches_compile_once_and_match_one_by_one(
    run_dir, tmp_path):
  run = saved_run.load_run(run_dir)
  rng = np.random.default_rng(0)
  paths = [_png(str(tmp_path / f"{i}.png"),
                rng.integers(0, 256, (28, 28, 1))) for i in range(5)]
  done = []
  out = predict.predict_files(run, paths, batch_size=2,
                              progress=done.append)
  # Three batches of one shape (the last padded): the trace guard of
  # make_predict_fn would raise on a second trace.
  assert done == [2, 2, 1] and out.paths == tuple(paths) and not out.skipped
  one_by_one = np.concatenate([
      predict.predict_files(run, [p], batch_size=1).probs for p in paths])
  chex.assert_trees_all_close(out.probs, one_by_one, atol=1e-6)
  # The run's own preprocessing: 28 -> 32 zero padding, x / 255.
  images = np.stack([preprocess.pad_to(np.asarray(Image.open(p))[..., None],
                                       32) for p in paths])
  expected = jax.nn.softmax(_logits(run, images.astype(np.float32) / 255))
  chex.assert_trees_all_close(out.probs, expected, atol=1e-6)


def test_undecodable_images_are_skipped_and_listed(run_dir, tmp_path):
  run = saved_run.load_run(run_dir)
  good = _png(str(tmp_path / "good.png"), np.zeros((32, 32, 1)))
  broken = str(tmp_path / "broken.png")
  with open(broken, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n truncated")
  text = str(tmp_path / "notes.jpg")
  with open(text, "w") as f:
    f.write("not an image")
  missing = str(tmp_path / "gone.png")
  out = predict.predict_files(run, [broken, good, text, missing],
                              batch_size=2)
  assert out.paths == (good,)
  chex.assert_shape(out.probs, (1, 3))
  reasons = dict(out.skipped)
  assert list(reasons) == [broken, text, missing]
  assert reasons[broken].startswith(f"Cannot decode image {broken}")
  assert reasons[missing].startswith(f"cannot read {missing}")


def test_gray_and_rgb_are_converted_as_the_runs_data(run_dir, tmp_path):
  rng = np.random.default_rng(1)
  rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  gray_run = saved_run.load_run(run_dir)  # channels=1
  gray = predict.prepare(rgb, gray_run)
  np.testing.assert_array_equal(gray, preprocess.convert_channels(rgb, 1))
  config = fake_config()
  config.data.channels = 3
  workdir = str(tmp_path / "rgb_run")
  fake_run(workdir, config=config, image_shape=(32, 32, 3))
  rgb_run = saved_run.load_run(workdir)
  np.testing.assert_array_equal(predict.prepare(gray, rgb_run),
                                np.repeat(gray, 3, axis=-1))
  # A gray PNG and an RGBA PNG both predict on the RGB run.
  paths = [_png(str(tmp_path / "g.png"), gray),
           str(tmp_path / "rgba.png")]
  Image.fromarray(np.concatenate([rgb, np.full((32, 32, 1), 255, np.uint8)],
                                 -1)).save(paths[1])
  out = predict.predict_files(rgb_run, paths, batch_size=2)
  assert out.paths == tuple(paths) and not out.skipped


def test_top_k_and_score_by_hand():
  probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6],
                    [0.3, 0.4, 0.3]], np.float32)
  classes, top = predict.top_k(probs, 5)  # At most the 3 classes.
  np.testing.assert_array_equal(classes, [[1, 2, 0], [0, 1, 2], [2, 0, 1],
                                          [1, 0, 2]])
  np.testing.assert_allclose(top[:, 0], [0.7, 0.5, 0.6, 0.4])
  scores = predict.score(np.array([1, 0, 0, 1]), probs, CLASSES)
  assert scores["accuracy"] == 0.75 and scores["count"] == 4
  np.testing.assert_array_equal(scores["confusion"],
                                [[1, 0, 1], [0, 2, 0], [0, 0, 0]])
  assert scores["per_class_accuracy"] == {"cat": 0.5, "dog": 1.0,
                                          "bird": None}
  assert scores["per_class_count"] == {"cat": 2, "dog": 2, "bird": 0}


# ------------------------------------------------------------ the command


def test_collect_images_reads_class_folders(tmp_path):
  root = tmp_path / "photos"
  for path in ("cat/b.png", "cat/sub/a.jpg", "dog/x.png", "loose.png",
               "fashion_mnist_Shirt/s.png"):
    _png(str(root / path), np.zeros((4, 4, 1)))
  (root / "cat" / "readme.txt").write_text("x")
  (root / ".hidden").mkdir()
  _png(str(root / "dog" / "._x.png"), np.zeros((4, 4, 1)))
  names = ("cat", "dog", "fashion_mnist/Shirt")
  items, notes = predict_cli.collect_images([str(root)], names)
  assert items == [(str(root / "cat/b.png"), 0),
                   (str(root / "cat/sub/a.jpg"), 0),
                   (str(root / "dog/x.png"), 1),
                   (str(root / "fashion_mnist_Shirt/s.png"), 2),
                   (str(root / "loose.png"), None)]
  assert notes == ["Skipped 1 file(s) whose extension is not an image's "
                   "(.txt: 1)."]
  (root / "horse").mkdir()
  with pytest.raises(data.DataError,
                     match=r"subfolder\(s\) horse are not target classes"):
    predict_cli.collect_images([str(root)], names)
  with pytest.raises(data.DataError, match="no such image file or folder"):
    predict_cli.collect_images([str(tmp_path / "nope.png")], names)


def test_run_predict_scores_class_folders_and_writes_a_csv(run_dir,
                                                            tmp_path):
  rng = np.random.default_rng(2)
  root = tmp_path / "photos"
  for name in ("cat", "dog"):
    for i in range(3):
      _png(str(root / name / f"{i}.png"),
           rng.integers(0, 256, (32, 32, 1)))
  with open(root / "dog" / "bad.png", "wb") as f:
    f.write(b"nope")
  output = str(tmp_path / "out" / "predictions.csv")
  lines, warnings = [], []
  summary = predict_cli.run_predict(
      run_dir, [str(root)], top_k=2, output=output, batch_size=4,
      emit=lines.append, warn=warnings.append)
  assert summary["predicted"] == 6 and summary["run"]["step"] == 40
  score = summary["score"]
  assert score["count"] == 6
  assert sum(sum(r) for r in score["confusion"]) == 6
  assert score["per_class_accuracy"]["bird"] is None
  assert os.path.exists(summary["plot"])
  assert summary["plot"] == str(tmp_path / "out" / "predictions_confusion.png")
  assert lines[0] == (f"predicted 6 image(s) with the final params of "
                      f"{run_dir} (step 40); predictions in {output}")
  assert lines[1].startswith("accuracy: ")
  assert warnings[0] == "skipped 1 image(s) that could not be used:"
  assert warnings[1].startswith(f"  {root / 'dog' / 'bad.png'}: Cannot decode")
  with open(output) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["path", "true_class", "class_1", "prob_1", "class_2",
                     "prob_2", "error"]
  assert len(rows) == 8  # Header, 6 predicted, 1 skipped; in folder order.
  by_path = {r[0]: r for r in rows[1:]}
  bad = by_path[str(root / "dog" / "bad.png")]
  assert bad[1] == "dog" and bad[2:6] == [""] * 4 and bad[6]
  first = by_path[str(root / "cat" / "0.png")]
  assert first[1] == "cat" and first[2] in CLASSES and not first[6]
  top = summary["predictions"][0][1]
  assert [first[2], float(first[3])] == [top[0][0], round(top[0][1], 6)]
  assert sorted(os.listdir(tmp_path / "out")) == [
      "predictions.csv", "predictions_confusion.png"]  # No temporaries.


def test_run_predict_prints_lines_and_refuses_no_usable_image(run_dir,
                                                             tmp_path):
  image = _png(str(tmp_path / "a.png"), np.zeros((32, 32, 1)))
  lines = []
  predict_cli.run_predict(run_dir, [image], top_k=1, emit=lines.append,
                          warn=lambda _: None)
  assert lines[0].startswith(f"{image}: ") and len(lines[0].split()) == 3
  bad = str(tmp_path / "bad.png")
  with open(bad, "w") as f:
    f.write("x")
  with pytest.raises(data.DataError,
                     match=r"None of the 1 image\(s\) could be used"):
    predict_cli.run_predict(run_dir, [bad], emit=lambda _: None,
                            warn=lambda _: None)


# ----------------------------------------------------------------- slow


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.predict", *args],
                        cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"},
                        check=False)


@pytest.mark.slow
def test_command_line_errors_are_one_line(tmp_path, run_dir):
  image = _png(str(tmp_path / "a.png"), np.zeros((32, 32, 1)))
  empty = str(tmp_path / "empty")
  os.makedirs(empty)
  for args, expected in [
      ((f"--workdir={empty}", f"--images={image}"),
       f"error: {empty} holds no finished run (results.json) and no "
       "checkpoint"),
      ((f"--workdir={run_dir}", f"--images={tmp_path / 'gone.png'}"),
       f"error: no such image file or folder: {tmp_path / 'gone.png'}."),
      ((f"--workdir={run_dir}",), "error: --images is required"),
  ]:
    result = _cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(expected), result.stderr
    assert result.stderr.count("\n") == 1
  result = _cli("--help")
  assert result.returncode == 0 and "--top_k: Classes shown per image." in (
      result.stdout)
  result = _cli(f"--workdir={run_dir}", image, "--top_k=2",
                "--params=val_selected")
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f"{image}: ")
  assert "with the val_selected params" in result.stdout


def _write_split(split, class_names, root):
  """A split's images as PNG class folders, from the dataset's own records
  (before the run's preprocessing, which predict applies itself)."""
  for loaded, positions, records in split.records():
    source = loaded.dataset.source(loaded.split)
    for position, record in zip(positions, records):
      image = loaded.dataset.decode(
          source[int(record)][loaded.dataset.image_key], lambda: "record")
      name = predict_cli.class_folder_name(
          class_names[split.labels[position]])
      _png(os.path.join(root, name, f"{int(position):05d}.png"), image)


@pytest.mark.slow
def test_predict_reproduces_the_runs_test_accuracy(tmp_path):
  from l2tl_jax import train  # pylint: disable=g-import-not-at-top

  config = tiny.get_config()
  config.method = "scratch"
  config.data.data_dir = str(tmp_path / "tfds")
  config.write_plots = False
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)
  task = data.build_task(config.data)
  folder_root = str(tmp_path / "test_split")
  _write_split(task.tgt_test, task.tgt_class_names, folder_root)
  for params, expected in (("final", results),
                           ("val_selected", results["val_selected"])):
    summary = predict_cli.run_predict(
        workdir, [folder_root], params=params,
        output=str(tmp_path / f"{params}.csv"), emit=lambda _: None)
    score = summary["score"]
    assert score["count"] == results["test_examples"] == 605
    assert score["accuracy"] == expected["test_accuracy"]  # Exactly.
    if "test_confusion" in expected:
      assert score["confusion"] == expected["test_confusion"]
      assert score["per_class_accuracy"] == expected[
          "test_per_class_accuracy"]
