"""Dataset kinds as a registry (registry.py, kinds/), the parsed data config
(parse.py), and no import cycle among the modules of l2tl_jax.data."""

import ast
import os
import pkgutil

import ml_collections
import pytest

from conftest_data import base_config, make_folder, tfds_dir  # pylint: disable=unused-import
from l2tl_jax import data
from l2tl_jax.data import idx as idx_lib
from l2tl_jax.data import parse
from l2tl_jax.data import registry
from l2tl_jax.data.errors import DataError

_DATA_DIR = os.path.dirname(data.__file__)


def test_registered_kinds_each_in_its_own_module():
  kinds = registry.kinds()
  assert [(k.name, k.names, k.prefix) for k in kinds] == [
      ('bundled', ('uci_digits', 'mnist_5k'), None),
      ('idx', ('idx',), 'idx:'),
      ('folder', (), 'folder:'),
      ('join', (), 'join:'),
      ('catalog', (), None),
  ]
  modules = [k.open.__module__ for k in kinds]
  assert modules == [f'l2tl_jax.data.kinds.{m}'
                     for m in ('bundled', 'idx', 'folder', 'joined',
                               'catalog')]
  assert [k.name for k in kinds if k.is_fallback] == ['catalog']
  # Messages list the kinds' spellings, catalog names aside.
  assert registry.examples() == ('uci_digits', 'mnist_5k', 'idx', 'idx:/dir',
                                 'folder:/dir')


@pytest.mark.parametrize('name, kind, argument', [
    ('uci_digits', 'bundled', ''),
    ('idx', 'idx', ''),
    ('idx:/data/x', 'idx', '/data/x'),
    ('folder:/data/x', 'folder', '/data/x'),
    ('folder:', 'folder', ''),
    ('join:mnist_5k+uci_digits', 'join', 'mnist_5k+uci_digits'),
    ('mnist', 'catalog', 'mnist'),
    ('folder', 'catalog', 'folder'),  # No prefix without its colon.
    ('uci_digits:1.0.0', 'catalog', 'uci_digits:1.0.0'),
    ('emnist/letters', 'catalog', 'emnist/letters'),
])
def test_find_picks_the_kind_by_prefix_or_name(name, kind, argument):
  found, arg = registry.find(name)
  assert (found.name, arg) == (kind, argument)


def test_a_kind_that_claims_another_kinds_strings_is_refused():
  def opener(name, argument, *, data_dir, download):
    raise AssertionError((name, argument, data_dir, download))
  for kind in (registry.Kind('folder', opener, prefix='x:'),
               registry.Kind('other', opener, prefix='folder:sub'),
               registry.Kind('other', opener, names=('folder:x',)),
               registry.Kind('other', opener, names=('idx',)),
               registry.Kind('other', opener)):
    with pytest.raises(ValueError, match='claims'):
      registry.register(kind)
  assert len(registry.kinds()) == 5


def test_a_registered_kind_opens_its_strings(tfds_dir, monkeypatch):
  opened = []

  def opener(name, argument, *, data_dir, download):
    opened.append((name, argument, data_dir, download))
    return data.open_dataset('uci_digits', data_dir=data_dir)

  # pylint: disable-next=protected-access
  monkeypatch.setattr(registry, '_KINDS', dict(registry._KINDS))
  registry.register(registry.Kind('mine', opener, prefix='mine:',
                                  examples=('mine:ARG',)))
  ds = data.open_dataset(' mine:abc ', data_dir=tfds_dir, download=False)
  assert opened == [('mine:abc', 'abc', tfds_dir, False)]
  assert ds.class_names == tuple(str(i) for i in range(10))
  with pytest.raises(DataError, match=r'non-empty string.*mine:ARG'):
    data.open_dataset(' ')


def test_data_dirs_come_from_the_kinds(tmp_path):
  folder = str(tmp_path / 'f')
  assert registry.data_dirs(f' join:mnist[0]+folder:{folder}+idx ') == [
      (f'folder:{folder}', folder), ('idx', idx_lib.DEFAULT_IDX_DIR)]
  assert registry.data_dirs('mnist') == []
  assert registry.data_dirs('folder:') == []
  with pytest.raises(DataError, match='Cannot read dataset string'):
    registry.data_dirs('join:a+')


def _data_modules() -> dict[str, str]:
  """Module name -> file of every module of l2tl_jax.data (packages too)."""
  out = {'l2tl_jax.data': os.path.join(_DATA_DIR, '__init__.py')}
  for info in pkgutil.walk_packages([_DATA_DIR], 'l2tl_jax.data.'):
    path = os.path.join(_DATA_DIR, *info.name.split('.')[2:])
    out[info.name] = (os.path.join(path, '__init__.py') if info.ispkg
                      else path + '.py')
  return out


def _imports(name: str, path: str, modules: dict[str, str]) -> set[str]:
  """The l2tl_jax.data modules a module imports, at any depth of its code."""
  package = name if path.endswith('__init__.py') else name.rsplit('.', 1)[0]
  with open(path) as f:
    tree = ast.parse(f.read())
  out = set()
  for node in ast.walk(tree):  # Module level and inside functions alike.
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        base = '.'.join(package.split('.')[:len(package.split('.'))
                                           - node.level + 1]
                        + ([base] if base else []))
      # `from P import m` imports the module P.m where m is one, else P.
      targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base
                 for a in node.names]
    else:
      continue
    out.update(t for t in targets if t in modules and t != name)
  return out


def test_no_import_cycle_among_the_data_modules():
  modules = _data_modules()
  assert {'l2tl_jax.data.registry', 'l2tl_jax.data.kinds.joined',
          'l2tl_jax.data.parse', 'l2tl_jax.data.tasks'} <= set(modules)
  graph = {name: _imports(name, path, modules)
           for name, path in modules.items()}
  # The registry knows no kind, the kinds know no task.
  assert not {m for m in graph['l2tl_jax.data.registry']
              if m.startswith('l2tl_jax.data.kinds')}
  assert 'l2tl_jax.data.tasks' not in graph['l2tl_jax.data.kinds.joined']
  state = {}

  def visit(name, path):
    state[name] = 'open'
    for dep in sorted(graph[name]):
      if state.get(dep) == 'open':
        cycle = path[path.index(dep):] + [dep]
        raise AssertionError(f'import cycle: {" -> ".join(cycle)}')
      if dep not in state:
        visit(dep, path + [dep])
    state[name] = 'done'

  for name in sorted(graph):
    if name not in state:
      visit(name, [name])


def test_data_spec_reads_the_config_once(tfds_dir):
  config = base_config(tfds_dir, source='uci_digits', target='uci_digits',
                       target_classes=(1, 2), target_val_split='train',
                       target_test_split=None, target_train_per_class=None,
                       source_corrupt_fraction=0.5, source_test_split=None,
                       allow_overlap=True)
  spec = data.data_spec(config)
  assert [d.name for d in spec.src_draws] == ['src_train']
  # Train takes what validation leaves in the same split: drawn last.
  assert [(d.name, d.split) for d in spec.tgt_draws] == [
      ('tgt_val', 'train'), ('tgt_train', 'train')]
  assert spec.corruption == parse.Corruption(None, 0.5, 0, within=False)
  assert spec.target_classes == (1, 2) and spec.config == config.to_dict()
  task, again = data.build_task(spec), data.build_task(config)
  assert task.identity() == again.identity()
  assert task.summary() == again.summary()
  assert data.source_class_names(spec) == data.source_class_names(config)


@pytest.mark.parametrize('overrides, match', [
    (dict(source_corrupt_fraction=1.5), r'a number in \[0, 1\]'),
    (dict(source=None, source_corrupt_fraction=0.1), 'has no source'),
    (dict(source_corrupt_fraction=0.1, source_corrupt_seed=1.0),
     'must be an integer'),
    (dict(source_corrupt_classes=()), 'source_corrupt_classes is empty'),
    (dict(source_corrupt_fraction=0.1, source_corrupt_to='elsewhere'),
     "Unknown source_corrupt_to 'elsewhere'"),
    (dict(allow_overlap=1), 'allow_overlap is True or False'),
    (dict(normalization='max'), "Unknown normalization 'max'"),
])
def test_data_spec_refuses_bad_settings_before_opening_anything(
    overrides, match, tmp_path):
  config = base_config(str(tmp_path / 'none'), source='no_such_dataset',
                       target='no_such_dataset').to_dict()
  config = ml_collections.ConfigDict({**config, **overrides})
  with pytest.raises(DataError, match=match):
    data.data_spec(config)
  assert not os.path.exists(tmp_path / 'none')
  # The corruption's 'to' is read only when something is corrupted.
  config = base_config(None, source_corrupt_to='elsewhere')
  assert data.data_spec(config).corruption is None


def test_folder_strings_open_through_their_kind(tmp_path, tfds_dir):
  root = make_folder(str(tmp_path / 'imgs'), {'a': 2, 'b': 2})
  ds = data.open_dataset(f'folder:{root}', data_dir=tfds_dir)
  assert ds.resolved == f'folder:{root}' and ds.class_names == ('a', 'b')
  assert ds.files('train').path(0) == os.path.join(root, 'a', 'img_000.png')
