"""Two CPU processes on localhost train as one process with as many devices.

Each process runs tests/multihost_script.py (jax.distributed from the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables, as
experiments.main reads them; cross-process collectives on the CPU through
gloo, JAX's default). The fast tests check the pieces a process needs alone:
the settings, and that the processes' rows of every batch make up the
single-process batch.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile

from absl.testing import absltest
import chex
import numpy as np
import pytest

from conftest_data import small_idx_task, tfds_dir  # pylint: disable=unused-import
from l2tl_jax import data
from l2tl_jax import distributed
from l2tl_jax.data import augment
from l2tl_jax.data import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tests", "multihost_script.py")
METHODS = ("finetune", "l2tl")
_DISTRIBUTED_ENV = (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
                    distributed.ENV_PROCESS_ID)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, data_dir: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_ENV}
  env["JAX_PLATFORMS"] = "cpu"
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}")
  env["L2TL_TEST_DATA_DIR"] = data_dir
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (REPO, env.get("PYTHONPATH")) if p)
  return env


def _run(argv: list[str], *, processes: int, devices: int,
         data_dir: str) -> list[str]:
  """Runs `argv` in `processes` processes of `devices` CPU devices each.

  Returns:
    The stdout of each process (all must exit with 0).
  """
  port = _free_port()
  procs = []
  for pid in range(processes):
    env = _env(devices, data_dir)
    if processes > 1:
      env.update({distributed.ENV_COORDINATOR: f"127.0.0.1:{port}",
                  distributed.ENV_NUM_PROCESSES: str(processes),
                  distributed.ENV_PROCESS_ID: str(pid)})
    procs.append(subprocess.Popen(
        [sys.executable, *argv], env=env, cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  outputs = []
  try:
    for proc in procs:
      stdout, stderr = proc.communicate(timeout=300)
      outputs.append((proc.returncode, stdout, stderr))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for pid, (code, stdout, stderr) in enumerate(outputs):
    assert code == 0, (
        f"process {pid} exited {code}:\n{stdout}\n{stderr[-5000:]}")
  return [stdout for _, stdout, _ in outputs]


def _launch(out_dir: str, args: list[str], *, processes: int, devices: int,
            data_dir: str) -> list[tuple[list[dict], list[str]]]:
  """Runs the script in `processes` processes of `devices` CPU devices each.

  Returns:
    Per process: the RESULT records and the WROTE list.
  """
  parsed = []
  for stdout in _run([SCRIPT, out_dir, *args], processes=processes,
                     devices=devices, data_dir=data_dir):
    lines = stdout.splitlines()
    results = [json.loads(l[len("RESULT "):]) for l in lines
               if l.startswith("RESULT ")]
    wrote = [json.loads(l[len("WROTE "):]) for l in lines
             if l.startswith("WROTE ")]
    assert len(results) == len(METHODS) and len(wrote) == 1, stdout
    parsed.append((results, wrote[0]))
  return parsed


def _script_overrides() -> list[str]:
  """multihost_script.config_for's changes of tiny.py, as flags."""
  return ["--config.parallelism=mesh", "--config.pretrain.steps=6",
          "--config.pretrain.lr_boundaries=(4,)", "--config.train.steps=6",
          "--config.train.lr_boundaries=(4,)",
          "--config.l2tl.policy_lr_boundaries=(4,)",
          "--config.eval.every_steps=3", "--config.log_every_steps=3",
          "--config.checkpoint_every_steps=3", "--config.write_plots=False"]


def _metrics(path: str) -> list[dict]:
  with open(path) as f:
    return [{k: v for k, v in json.loads(l).items() if k != "steps_per_s"}
            for l in f if l.strip()]


def test_settings_come_from_config_then_environment():
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": "2"}
  assert distributed.settings(None, None) is None
  assert distributed.settings({"coordinator_address": None}, {}) is None
  assert distributed.settings({}, env) == {
      "coordinator_address": "10.0.0.1:1234", "num_processes": 4,
      "process_id": 2, "cluster_detection_method": "deactivate",
      "initialization_timeout": distributed.DEFAULT_TIMEOUT_S}
  config = {"coordinator_address": "h:1", "num_processes": 2,
            "process_id": 0, "cluster_detection": None}
  assert distributed.settings(config, env)["num_processes"] == 2
  assert distributed.settings(config, env)["coordinator_address"] == "h:1"
  # One process needs no coordinator; an incomplete set is refused.
  assert distributed.settings({"num_processes": 1}, {}) is None
  with pytest.raises(ValueError, match="process_id"):
    distributed.settings({}, {"JAX_COORDINATOR_ADDRESS": "h:1",
                              "JAX_NUM_PROCESSES": "2"})
  with pytest.raises(ValueError, match="not an integer"):
    distributed.settings({}, {**env, "JAX_PROCESS_ID": "one"})
  # Cluster detection fills the rest (None: JAX's default detection).
  assert distributed.settings({"cluster_detection": "auto"}, {}) == {
      "coordinator_address": None, "num_processes": None, "process_id": None,
      "cluster_detection_method": None,
      "initialization_timeout": distributed.DEFAULT_TIMEOUT_S}
  assert distributed.settings({"cluster_detection": "slurm"}, {})[
      "cluster_detection_method"] == "slurm"
  # Nothing set: a no-op.
  assert not distributed.initialize(None, {})
  assert distributed.settings({"initialization_timeout": 20}, env)[
      "initialization_timeout"] == 20


@pytest.mark.parametrize("address,host,port", [
    ("10.0.0.1:1234", "10.0.0.1", 1234),
    ("node-7.cluster:65535", "node-7.cluster", 65535),
    ("[::1]:8476", "::1", 8476),
    ("[fe80::1%eth0]:1", "fe80::1%eth0", 1),
])
def test_coordinator_addresses_are_host_and_port(address, host, port):
  assert distributed.parse_address(address) == (host, port)


@pytest.mark.parametrize("address,match", [
    ("myhost", "has no port"),
    ("myhost:", "has no port"),
    ("[::1]", "has no port"),
    ("myhost:http", "port 'http' is not an integer in \\[1, 65535\\]"),
    ("myhost:0", "port '0' is not an integer"),
    ("myhost:70000", "port '70000' is not an integer"),
    (":1234", "has no host"),
    ("[]:1234", "has no host"),
    ("::1:1234", "IPv6 host needs brackets, e.g. '\\[::1\\]:1234'"),
])
def test_malformed_coordinator_addresses_are_refused(address, match):
  with pytest.raises(distributed.SetupError, match=match):
    distributed.parse_address(address)
  # Before anything starts, from the environment too; one line each.
  env = {distributed.ENV_COORDINATOR: address,
         distributed.ENV_NUM_PROCESSES: "2", distributed.ENV_PROCESS_ID: "1"}
  with pytest.raises(ValueError, match=match) as info:
    distributed.initialize(None, env)
  assert "\n" not in str(info.value)


@pytest.mark.parametrize("config,match", [
    ({"num_processes": 2, "process_id": 2}, "must be in \\[0, 1\\] for 2"),
    ({"num_processes": 2, "process_id": -1}, "must be in \\[0, 1\\]"),
    ({"num_processes": 0, "process_id": 0}, "must be >= 1, got 0"),
    ({"num_processes": 2, "process_id": 0, "initialization_timeout": 0},
     "initialization_timeout must be a positive number of seconds"),
    ({"num_processes": 2, "process_id": 0, "initialization_timeout": "60"},
     "initialization_timeout must be a positive"),
])
def test_settings_out_of_range_are_refused(config, match):
  with pytest.raises(distributed.SetupError, match=match):
    distributed.settings({"coordinator_address": "h:1", **config}, {})


def test_a_process_whose_coordinator_never_starts_stops_in_time():
  """Process 1 of 2 waits for process 0's port with progress lines, then
  stops with one line (nothing of JAX's has started)."""
  lines = []
  port = _free_port()  # Nothing listens there.
  config = {"coordinator_address": f"127.0.0.1:{port}", "num_processes": 2,
            "process_id": 1, "initialization_timeout": 1.5}
  with pytest.raises(distributed.SetupError) as info:
    distributed.initialize(config, {}, report=lines.append,
                           progress_every_s=0.5)
  message = str(info.value)
  assert message.startswith(
      f"process 1 of 2 could not reach the coordinator at 127.0.0.1:{port} "
      "within 1.5 s (")
  assert f"JAX_COORDINATOR_ADDRESS=127.0.0.1:{port}" in message
  assert "JAX_NUM_PROCESSES=2" in message
  assert "initialization_timeout" in message and "\n" not in message
  assert lines and all(
      l.startswith("process 1 of 2: waiting for the coordinator (process 0) "
                   f"at 127.0.0.1:{port} (") for l in lines)


def _console(argv, *, env=None, timeout=120):
  return subprocess.run([sys.executable, *argv], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _error_line(proc) -> str:
  """The one 'error: ...' line of a process that exited with code 2."""
  output = proc.stdout + proc.stderr
  assert proc.returncode == 2, output
  assert "Traceback" not in output, output
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, output
  return errors[0]


@pytest.mark.slow  # A subprocess.
def test_a_coordinator_whose_peers_never_start_stops_in_time():
  """Process 0 of 2 alone: one line and exit code 2 at the deadline, before
  JAX's own fatal abort."""
  port = _free_port()
  code = ("from l2tl_jax import distributed; distributed.initialize("
          f"{{'coordinator_address': '127.0.0.1:{port}', 'num_processes': 2,"
          " 'process_id': 0, 'initialization_timeout': 2}, {},"
          " progress_every_s=0.5)")
  proc = _console(["-c", code], env=_env(1, "/unused"))
  line = _error_line(proc)
  assert line.startswith(
      "error: distributed set-up: process 0 of 2: not every process "
      f"connected to the coordinator at 127.0.0.1:{port} within 2 s: start "
      "all 2 processes (JAX_PROCESS_ID 0 to 1)"), line
  assert "process 0 of 2: waiting for the other processes" in proc.stderr


@pytest.mark.slow  # Two subprocesses.
def test_processes_started_with_different_counts_all_stop():
  """JAX_NUM_PROCESSES 2 on process 0 and 3 on process 1: both connect (the
  coordinator expects 2), compare their settings, and stop with one line."""
  port = _free_port()
  procs = []
  for pid, num in ((0, 2), (1, 3)):
    env = _env(1, "/unused")
    env.update({distributed.ENV_COORDINATOR: f"127.0.0.1:{port}",
                distributed.ENV_NUM_PROCESSES: str(num),
                distributed.ENV_PROCESS_ID: str(pid)})
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "experiments.main",
         "--config=experiments/configs/tiny.py", "--workdir=/unused/run"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True))
  try:
    outputs = [p.communicate(timeout=120) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for proc, (stdout, stderr) in zip(procs, outputs):
    line = _error_line(subprocess.CompletedProcess(
        proc.args, proc.returncode, stdout, stderr))
    assert line == (
        "error: distributed set-up: the processes were started with "
        "different JAX_NUM_PROCESSES (or config.distributed.num_processes): "
        "process 0: 2, process 1: 3; 2 connected. Start every process with "
        "the same JAX_NUM_PROCESSES."), line


def _joined(parts):
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.mark.parametrize("processes", [2, 4])
def test_process_rows_make_up_the_global_batches(task, processes):
  split = task.src_train  # 40 examples.
  whole = data.train_iterator(split, batch_size=16, seed=3, augment=True,
                              drop_remainder=False)
  parts = [data.train_iterator(split, batch_size=16, seed=3, augment=True,
                               drop_remainder=False, process_index=p,
                               process_count=processes)
           for p in range(processes)]
  for _ in range(6):  # Across epoch boundaries (40 is no multiple of 16).
    batches = [next(it) for it in parts]
    chex.assert_shape(batches[0]["image"], (16 // processes, 32, 32, 1))
    chex.assert_trees_all_equal(_joined(batches), next(whole))
  # The state is the global position: it resumes any process count.
  state = parts[1].get_state()
  assert state == whole.get_state()
  whole.set_state(state)
  parts[0].set_state(state)
  chex.assert_trees_all_equal(next(parts[0])["label"],
                              next(whole)["label"][:16 // processes])
  with pytest.raises(data.DataError, match="divisible by 3"):
    data.train_iterator(split, batch_size=16, seed=3, process_index=0,
                        process_count=3)


@pytest.mark.parametrize("processes", [2, 4])
def test_process_rows_of_eval_batches_count_every_example_once(task,
                                                               processes):
  split = task.src_test  # 20 examples: the last batch has 4 real rows.
  whole = list(data.eval_batches(split, batch_size=16))
  parts = [list(data.eval_batches(split, batch_size=16, process_index=p,
                                  process_count=processes))
           for p in range(processes)]
  assert all(len(p) == len(whole) for p in parts)
  for i, batch in enumerate(whole):
    chex.assert_trees_all_equal(_joined([p[i] for p in parts]), batch)
  # The last process's share of the last batch is padding only.
  assert parts[-1][-1]["mask"].sum() == 0


@pytest.mark.parametrize("channels", [1, 3])
def test_random_resized_crop_rows_are_those_of_the_whole_batch(channels):
  images = np.random.default_rng(0).integers(0, 256, (8, 20, 30, channels),
                                             np.uint8)
  whole = augment.random_resized_crop_batch(
      images, np.random.default_rng(5), size=8)
  for rows in (slice(0, 4), slice(4, 8), slice(2, 4)):
    # pylint: disable-next=protected-access
    part = pipeline._random_resized_crop_rows(
        images[rows], np.random.default_rng(5), size=8, total=8, rows=rows)
    np.testing.assert_array_equal(part, whole[rows])


@pytest.mark.slow
class MultiHostTest(absltest.TestCase):

  def test_two_processes_match_one_process(self):
    tmp = tempfile.TemporaryDirectory(prefix="l2tl_multihost_")
    self.addCleanup(tmp.cleanup)
    root = tmp.name
    data_dir = os.path.join(root, "tfds")
    single_dir, multi_dir = (os.path.join(root, "single"),
                             os.path.join(root, "multi"))
    (single, _), = _launch(single_dir, list(METHODS), processes=1, devices=4,
                           data_dir=data_dir)
    # Process 1 alone gets SIGTERM after step 3: both stop there and save.
    stopped = _launch(multi_dir, ["--interrupt=1:3", *METHODS], processes=2,
                      devices=2, data_dir=data_dir)
    for results, _ in stopped:
      for r in results:
        self.assertEqual((r["status"], r["step"], r["signal"], r["start_step"]),
                         ("interrupted", 3, 15, 0))
    self.assertEqual(stopped[1][1], [])
    # The rerun resumes both runs from their step-3 checkpoints.
    resumed = _launch(multi_dir, list(METHODS), processes=2, devices=2,
                      data_dir=data_dir)
    (multi, wrote_0), (multi_1, wrote_1) = resumed
    self.assertEqual([{k: v for k, v in r.items() if k != "process"}
                      for r in multi_1],
                     [{k: v for k, v in r.items() if k != "process"}
                      for r in multi])
    # Process 0 writes the run's files; process 1 only its checkpoint parts.
    self.assertEqual(wrote_1, [])
    for method in METHODS:
      for name in ("results.json", "metrics.jsonl"):
        self.assertIn(os.path.join(method, name), wrote_0)

    # The launcher: jax.distributed from the environment, one log file.
    workdir = os.path.join(root, "main_finetune")
    stdouts = _run(
        ["-m", "experiments.main", "--config=experiments/configs/tiny.py",
         f"--workdir={workdir}", "--config.method=finetune",
         f"--config.data.data_dir={data_dir}",
         f"--config.pretrain_cache_dir={os.path.join(multi_dir, 'pretrain')}",
         *_script_overrides()],
        processes=2, devices=2, data_dir=data_dir)
    self.assertIn("done:", stdouts[0])
    self.assertNotIn("done:", stdouts[1])
    with open(os.path.join(workdir, "results.json")) as f:
      self.assertEqual(json.load(f)["test_accuracy"],
                       single[0]["test_accuracy"])
    with open(os.path.join(workdir, "l2tl.log")) as f:
      self.assertEqual(f.read().count("Data ready"), 1)

    for ref, got in zip(single, multi):
      method = ref["method"]
      with self.subTest(method):
        self.assertEqual((got["status"], got["start_step"]), ("completed", 3))
        self.assertLen(ref["devices"], 4)
        self.assertLen(got["devices"], 4)
        self.assertEqual(got["test_examples"], 605)
        for key in ("steps", "test_accuracy", "val_accuracy", "val_selected"):
          self.assertEqual(got[key], ref[key], key)
        np.testing.assert_allclose(got["test_loss"], ref["test_loss"],
                                   rtol=1e-5)
        np.testing.assert_allclose(got["pretrain"]["final_batch_loss"],
                                   ref["pretrain"]["final_batch_loss"],
                                   rtol=1e-5)
        if method == "l2tl":
          np.testing.assert_allclose(
              list(got["policy"]["expected_class_weights"].values()),
              list(ref["policy"]["expected_class_weights"].values()),
              atol=1e-6)
        with open(os.path.join(multi_dir, method, "results.json")) as f:
          self.assertEqual(json.load(f)["test_accuracy"], got["test_accuracy"])
        ref_metrics = _metrics(os.path.join(single_dir, method,
                                            "metrics.jsonl"))
        got_metrics = _metrics(os.path.join(multi_dir, method,
                                            "metrics.jsonl"))
        self.assertEqual([sorted(r) for r in got_metrics],
                         [sorted(r) for r in ref_metrics])
        for r_ref, r_got in zip(ref_metrics, got_metrics):
          for k, v in r_ref.items():
            if isinstance(v, float):
              np.testing.assert_allclose(r_got[k], v, rtol=1e-5, atol=1e-7,
                                         err_msg=f"{k} at step {r_ref['step']}")
            else:
              self.assertEqual(r_got[k], v, k)


if __name__ == "__main__":
  absltest.main()
