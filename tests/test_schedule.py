"""Which step each global step is: maxl_jax/training/schedule.py."""

import pytest

from maxl_jax.errors import UsageError
from maxl_jax.training import schedule


def test_paper_schedule_alternates_passes():
  plan = schedule.Schedule('paper', steps_per_epoch=3)
  assert plan.epoch_steps == 6
  kinds = [plan.kind(s) for s in range(12)]
  assert kinds == (['primary'] * 3 + ['meta'] * 3) * 2
  assert plan.kinds() == ('primary', 'meta')


def test_interleaved_schedule_updates_theta2_every_k_steps():
  every = schedule.Schedule('interleaved', steps_per_epoch=4)
  assert [every.kind(s) for s in range(4)] == ['interleaved'] * 4
  assert every.epoch_steps == 4 and every.kinds() == ('interleaved',)
  k3 = schedule.Schedule('interleaved', steps_per_epoch=4, meta_every=3)
  kinds = [k3.kind(s) for s in range(9)]
  assert [s for s, k in enumerate(kinds) if k == 'interleaved'] == [2, 5, 8]
  assert k3.kinds() == ('primary', 'interleaved')


def test_single_schedule_and_bad_meta_every():
  assert {schedule.Schedule('single', 5).kind(s) for s in range(10)} == {
    'primary'
  }
  with pytest.raises(UsageError, match='meta_every'):
    schedule.Schedule('paper', 5, meta_every=2)
  with pytest.raises(UsageError, match='meta_every'):
    schedule.Schedule('interleaved', 5, meta_every=0)


@pytest.mark.parametrize(
  'plan',
  [
    schedule.Schedule('paper', steps_per_epoch=3),
    schedule.Schedule('interleaved', steps_per_epoch=4),
    schedule.Schedule('interleaved', steps_per_epoch=4, meta_every=3),
  ],
)
def test_meta_index_counts_the_theta2_steps_before(plan):
  theta2_steps = [s for s in range(24) if plan.kind(s) != 'primary']
  assert [plan.meta_index(s) for s in theta2_steps] == list(
    range(len(theta2_steps))
  )
