"""The commands' console on user errors: one line, exit code 2, no traceback.

Each case is a command line that must stop before any training or timing
starts: exit code 2, exactly one line 'error: ...' on stderr (the last; only
progress lines such as a dataset's preparation may come before it), and no
traceback anywhere (experiments/cli.py's convention). '{tmp}' in an argument
is a fresh temporary folder.
"""

import os
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from experiments import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "--config=experiments/configs/tiny.py"
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                    "JAX_PROCESS_ID")
_TWO_PROCESSES = {"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}

# (command and arguments, extra environment, the error line's start)
CASES = {
    "main: a config file that does not exist": (
        ["experiments.main", "--config={tmp}/none.py", "--workdir={tmp}/run"],
        {}, "error: --config={tmp}/none.py: cannot load the config file: "
        "[Errno 2] No such file or directory"),
    "main: a config file with a syntax error": (
        ["experiments.main", "--config={tmp}/broken.py",
         "--workdir={tmp}/run"],
        {}, "error: cannot load the config file: {tmp}/broken.py, line 1: "
        "SyntaxError"),
    "main: a misspelled config override": (
        ["experiments.main", TINY, "--config.train.stpes=3",
         "--workdir={tmp}/run"],
        {}, "error: bad config override --config.train.stpes: 'stpes' is not "
        "a field of the config. Did you mean \"steps\""),
    "main: an unknown l2tl mode": (
        ["experiments.main", TINY, "--config.l2tl.mode=bogus",
         "--workdir={tmp}/run"],
        {}, "error: 1 config field(s) cannot be used: config.l2tl.mode must "
        "be one of reference, meta_gradient, recommended, got 'bogus'"),
    "main: a coordinator address without a port": (
        ["experiments.main", TINY, "--workdir={tmp}/run"],
        {"JAX_COORDINATOR_ADDRESS": "myhost", **_TWO_PROCESSES},
        "error: distributed set-up: coordinator address 'myhost' "
        "(JAX_COORDINATOR_ADDRESS or config.distributed.coordinator_address) "
        "has no port"),
    "main: a process id out of range": (
        ["experiments.main", TINY, "--workdir={tmp}/run"],
        {"JAX_COORDINATOR_ADDRESS": "myhost:1234", "JAX_NUM_PROCESSES": "2",
         "JAX_PROCESS_ID": "2"},
        "error: distributed set-up: The process id (JAX_PROCESS_ID or "
        "config.distributed.process_id) must be in [0, 1] for 2 processes"),
    "study: a negative --bench_steps": (
        ["experiments.study", TINY, "--workdir={tmp}/run",
         "--bench_steps=-3"],
        {}, "error: flag --bench_steps=-3: -3 is not a non-negative integer"),
    "study: an unknown l2tl mode": (
        ["experiments.study", TINY, "--workdir={tmp}/run",
         "--config.l2tl.mode=bogus"],
        {}, "error: 1 config field(s) cannot be used: config.l2tl.mode"),
    "study: a known answer of the wrong length": (
        ["experiments.study", TINY, "--workdir={tmp}/run",
         "--config.data.data_dir={tmp}/tfds",
         "--config.source_class_relevance=(1,0,1)"],
        {}, "error: config.source_class_relevance has 3 entries, but the "
        "source has 10 classes"),
    "bench: --steps=0": (
        ["experiments.bench", "--steps=0"],
        {}, "error: flag --steps=0: 0 is not a positive integer"),
    "bench: --repeats=0": (
        ["experiments.bench", "--repeats=0"],
        {}, "error: flag --repeats=0: 0 is not a positive integer"),
    "bench: an unknown encoder": (
        ["experiments.bench", "--encoder=bogus"],
        {}, "error: flag --encoder=bogus: value should be one of"),
    "bench_input: --steps=0": (
        ["experiments.bench_input", "--steps=0"],
        {}, "error: flag --steps=0: 0 is not a positive integer"),
    "bench_device: an unknown dtype": (
        ["experiments.bench_device", "--dtypes=float16"],
        {}, "error: flag --dtypes=['float16']: --dtypes must be"),
    "compare: --seeds=0": (
        ["experiments.compare", TINY, "--workdir={tmp}/run", "--seeds=0"],
        {}, "error: flag --seeds=0: 0 is not a positive integer"),
    "compare: an empty --target_per_class": (
        ["experiments.compare", TINY, "--workdir={tmp}/run",
         "--target_per_class="],
        {}, "error: --target_per_class is empty"),
    "relevance: a missing folder": (
        ["experiments.relevance", "--workdir={tmp}/none"],
        {}, "error: {tmp}/none is not a directory."),
    "selection_table: a missing study": (
        ["experiments.selection_table", "--studies={tmp}/none"],
        {}, "error: --studies: cannot read {tmp}/none: [Errno 2]"),
}


@pytest.mark.slow  # Every case starts a Python process that imports JAX.
@pytest.mark.parametrize("case", list(CASES))
def test_a_user_error_is_one_line_and_exit_code_2(tmp_path, case):
  argv, extra_env, start = CASES[case]
  tmp = str(tmp_path)
  (tmp_path / "broken.py").write_text("def get_config(:\n  pass\n")
  env = {k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_ENV}
  env.update({"JAX_PLATFORMS": "cpu", **extra_env})
  proc = subprocess.run(
      [sys.executable, "-m", *[a.replace("{tmp}", tmp) for a in argv]],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
  output = proc.stdout + proc.stderr
  assert proc.returncode == 2, output
  assert "Traceback" not in output, output
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error:")]
  assert len(errors) == 1 and lines[-1] == errors[0], output
  assert errors[0].startswith(start.replace("{tmp}", tmp)), errors[0]
  assert not os.path.exists(tmp_path / "run")  # Nothing was written.


def _parse(argv, capsys):
  """cli.parse_flags on a fresh flag set with a --config flag: (exit code,
  stderr)."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "Config file.",
                                  flag_values=flag_values, sys_argv=argv)
  flags.DEFINE_integer("count", 1, "A count.", lower_bound=1,
                       flag_values=flag_values)
  with pytest.raises(SystemExit) as info:
    cli.parse_flags(argv, flag_values)
  return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--config={tmp}/none.py"],
     "error: --config={tmp}/none.py: cannot load the config file: [Errno 2] "
     "No such file or directory: '{tmp}/none.py'. See --help."),
    (["--config={tmp}/none.py", "--config.seed=1"],
     "error: cannot load the config file: [Errno 2] No such file or "
     "directory: '{tmp}/none.py'. See --help."),
    (["--config={tmp}"],
     "error: --config={tmp}: cannot load the config file: [Errno 21] Is a "
     "directory: '{tmp}'. See --help."),
    (["--config={tmp}/broken.py"],
     "error: cannot load the config file: {tmp}/broken.py, line 1: "
     "SyntaxError: invalid syntax"),
    (["--config={tmp}/raises.py"],
     "error: cannot load the config file: {tmp}/raises.py, line 2: "
     "ValueError: no such benchmark"),
    (["--config={tmp}/empty.py"],
     "error: cannot load the config file: it defines no get_config() (see "
     "experiments/configs/*.py)."),
    (["--config=experiments/configs/tiny.py", "--config.train.stpes=3"],
     "error: bad config override --config.train.stpes: 'stpes' is not a "
     "field of the config. Did you mean \"steps\" instead of \"stpes\"? "
     "See --help."),
    (["--count=0"], "error: flag --count=0: 0 is not a positive integer. See "
     "--help."),
])
def test_flags_that_cannot_be_parsed_are_one_line(tmp_path, capsys,
                                                   monkeypatch, args, message):
  # ml_collections loads every config file as the module 'config_config'
  # (one per process in a command; reused across these cases).
  monkeypatch.delitem(sys.modules, "config_config", raising=False)
  (tmp_path / "broken.py").write_text("def get_config(:\n  pass\n")
  (tmp_path / "raises.py").write_text(
      "def get_config():\n  raise ValueError('no such benchmark')\n")
  (tmp_path / "empty.py").write_text("SEED = 1\n")
  argv = ["prog", *[a.replace("{tmp}", str(tmp_path)) for a in args]]
  code, err = _parse(argv, capsys)
  assert code == 2
  assert err == message.replace("{tmp}", str(tmp_path)) + "\n"


def test_a_config_file_that_loads_is_parsed(capsys):
  argv = ["prog", "--config=experiments/configs/tiny.py",
          "--config.train.steps=3", "rest"]
  flag_values = flags.FlagValues()
  config = config_flags.DEFINE_config_file(
      "config", None, "Config file.", flag_values=flag_values, sys_argv=argv)
  assert cli.parse_flags(argv, flag_values) == ["prog", "rest"]
  assert config.value.train.steps == 3
  assert capsys.readouterr().err == ""
