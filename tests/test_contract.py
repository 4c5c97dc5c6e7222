"""The run contract (maxl_jax/training/protocol.py, contract.py): every
kind of run implements `Run`, its state `State`, and `config.run` names
the kind."""

import json

import ml_collections
import pytest
from toy_problems import TOY_INFO, run_config

from experiments.configs import combine_fashion, default
from maxl_jax.data.info import DatasetInfo
from maxl_jax.data.spec import DataSpec
from maxl_jax.errors import UsageError
from maxl_jax.labels import KMeansOptions
from maxl_jax.training import config_fields, contract
from maxl_jax.training import workdir as workdir_lib


def _combiner_config():
  config = combine_fashion.get_config()
  config.model.widths = (4, 8, 8, 8)
  config.model.head_hidden = 8
  return config


# One config and dataset per kind: a new kind without one fails below.
EXAMPLES = {
  'maxl': (run_config, TOY_INFO),
  'combiner': (
    _combiner_config,
    DatasetInfo('fashion_mnist', 10, (32, 32, 1), 100, 100, 10),
  ),
}


def protocol_members() -> set[str]:
  """The names `contract.Run` lists: its fields, properties and methods."""
  names = set(contract.Run.__annotations__)
  names |= {
    k
    for k, v in vars(contract.Run).items()
    if not k.startswith('_') and (callable(v) or isinstance(v, property))
  }
  return names


def test_every_kind_has_an_example():
  assert set(EXAMPLES) == set(contract.KINDS)


@pytest.mark.parametrize('kind', sorted(contract.KINDS))
def test_every_kind_implements_the_protocol(kind):
  make_config, info = EXAMPLES[kind]
  config = make_config()
  assert contract.kind_of(config) == kind
  run = contract.build_run(config, info)
  assert isinstance(run, contract.Run)
  members = protocol_members()
  assert {'held_out', 'drift_step', 'jit_steps', 'lr_schedule'} <= members
  for name in members:
    assert hasattr(type(run), name) or name in vars(run), name
    if name in contract.Run.__annotations__:
      assert getattr(run, name) is not None, name  # No null placeholders.


@pytest.mark.parametrize('kind', sorted(contract.KINDS))
def test_every_kinds_state_has_what_the_loop_reads(kind):
  """`protocol.State`: the loop reads θ1's step count and θ1, nothing else
  of the state."""
  make_config, info = EXAMPLES[kind]
  shapes = contract.build_run(make_config(), info).state_shapes()
  assert isinstance(shapes, contract.State)
  assert set(contract.State.__annotations__) == {'step1', 'theta1'}


def test_a_class_missing_a_member_is_not_a_run():
  run = contract.build_run(run_config(), TOY_INFO)

  class Partial:
    def __getattr__(self, name):
      if name == 'drift_step':
        raise AttributeError(name)
      return getattr(run, name)

  assert not isinstance(Partial(), contract.Run)


def test_config_run_names_the_kind():
  config = run_config()
  config.run = 'nope'
  with pytest.raises(UsageError, match="config.run = 'nope'"):
    contract.validate(config)
  # A config.json from before config.run: its combiner group decides.
  for config, kind in (
    (_combiner_config(), 'combiner'),
    (run_config(), 'maxl'),
  ):
    old = ml_collections.ConfigDict(config.to_dict())
    del old['run']
    assert contract.kind_of(config_fields.upgrade(old)) == kind


def test_the_loop_fields_are_checked_for_every_kind():
  for make_config, _ in EXAMPLES.values():
    config = make_config()
    config.train.on_nonfinite = 'ignore'
    with pytest.raises(UsageError, match='on_nonfinite'):
      contract.validate(config)


def test_an_earlier_config_json_is_upgraded_where_a_run_is_restored(tmp_path):
  """Each field added since gets the value that does what runs before it
  did; every field of the table is a field of today's config."""
  today = default.get_config()
  for dotted, _ in config_fields.ADDED:
    config_fields.config_field(today, dotted)  # KeyError if not a field.
  old = today.to_dict()
  del old['run'], old['log']['meta_signal_every'], old['data']['balance']
  old['combiner'] = {'form': 'linear'}
  (tmp_path / 'config.json').write_text(json.dumps(old))
  config = workdir_lib.read_config(tmp_path)
  assert config.run == 'combiner'  # It had a combiner group.
  assert config.log.meta_signal_every == 1  # Logged every θ2 step then.
  assert config.data.balance == 'primary'
  assert config.maxl.balance == today.maxl.balance  # Present: untouched.


def test_the_layers_settings_default_to_the_default_config():
  """The typed settings the run builder makes (`DataSpec`, `KMeansOptions`)
  have the default config's values as their own defaults: the library and
  the command line start from the same place."""
  config = default.get_config()
  assert DataSpec(**config.data) == DataSpec()
  assert KMeansOptions(**config.kmeans) == KMeansOptions()
