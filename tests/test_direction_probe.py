"""studies/meta_signal/directions.py's probe: Human's labels matched to g's
slots (a linear assignment per primary class), against a brute-force search
over every assignment, and the paired differences' intervals."""

import itertools

import numpy as np

from studies.meta_signal import directions

# Two primary classes: fine classes 0, 2, 4 -> class 0; 1, 3 -> class 1.
FINE_TO_PRIMARY = np.array([0, 1, 0, 1, 0])
PSI = np.array([3, 2])


def _brute_force(probs, fine):
  """The slot of each image under the assignment with the largest overlap,
  found by trying every permutation of each class's slots."""
  starts = np.concatenate([[0], np.cumsum(PSI)[:-1]])
  slot_of = {}
  for c, start in enumerate(starts):
    members = np.flatnonzero(FINE_TO_PRIMARY == c)
    best = max(
      itertools.permutations(range(PSI[c])),
      key=lambda perm: sum(
        probs[fine == f, start + perm[i]].sum() for i, f in enumerate(members)
      ),
    )
    slot_of.update({f: start + best[i] for i, f in enumerate(members)})
  return np.array([slot_of[f] for f in fine])


def test_matched_slots_are_the_best_assignment_by_brute_force():
  rng = np.random.default_rng(0)
  for _ in range(20):
    fine = rng.integers(0, 5, size=12)
    primary = FINE_TO_PRIMARY[fine]
    mask = np.zeros((12, 5))
    mask[primary == 0, :3] = 1
    mask[primary == 1, 3:] = 1
    probs = rng.random((12, 5)) ** 4 * mask
    probs /= probs.sum(-1, keepdims=True)
    got = directions.matched_slots(probs, fine, FINE_TO_PRIMARY, PSI)
    np.testing.assert_array_equal(got, _brute_force(probs, fine))
    assert np.all(mask[np.arange(12), got] == 1)  # The class's own slots.


def test_matched_slots_undo_a_relabelling_of_the_fine_classes():
  """g's one-hot labels that are Human's up to a permutation within each
  class are matched exactly."""
  fine = np.array([0, 2, 4, 1, 3, 0, 2, 4, 1, 3])
  slots = {0: 2, 2: 0, 4: 1, 1: 4, 3: 3}  # Permuted within each class.
  probs = np.eye(5)[[slots[f] for f in fine]]
  got = directions.matched_slots(probs, fine, FINE_TO_PRIMARY, PSI)
  np.testing.assert_array_equal(got, [slots[f] for f in fine])


def test_paired_differences_per_batch_with_their_interval():
  rows = []
  for seed, b, h, r in (('seed0', 0, 3.0, 1.0), ('seed0', 1, 2.0, 1.0),
                        ('seed1', 0, 4.0, 1.0)):  # fmt: skip
    for direction, meta in (('human', h), ('random_onehot', r),
                            ('human_matched', h + 1)):  # fmt: skip
      rows.append({
        'group': 'g', 'seed': seed, 'state': 'final', 'objective': 'one_step',
        'direction': direction, 'batch': b, 'meta': meta,
      })  # fmt: skip
  out = {r['difference']: r for r in directions.paired(rows)}
  human = out['human − random']
  assert human['n'] == 3 and human['mean'] == 2.0
  np.testing.assert_allclose(human['ci95'], 4.303 * 1 / np.sqrt(3), rtol=1e-3)
  assert out['matched − random']['mean'] == 3.0
