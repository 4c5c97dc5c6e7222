"""The K-Means baseline: auxiliary labels from k-means on autoencoder codes.

DESIGN §4: a small convolutional autoencoder is trained on the training
images, every training image is encoded, and the codes of each primary class
`c` are clustered by k-means into `psi[c]` clusters. Training example `i` of
class `c` in cluster `j` gets the auxiliary class `o_c + j` (one-hot). Every
`refresh_every` steps (0 = at each epoch end) the autoencoder
trains a few more steps and the codes are clustered again, warm-started from
the previous centroids.

`label_state` holds everything needed to continue, as arrays:
  ae_params, ae_opt: the autoencoder's parameters and Adam state.
  centroids: float32 [K, latent_dim], rows `[o_c, o_c + psi[c])` of class c.
  assign:    int32 [num_train], the auxiliary class of each training image
             (global index, as `batch['index']`).
  refreshes: int32 [], clusterings done after the initial one.
A refresh is a deterministic function of (label_state, step): its randomness
(autoencoder batches, k-means++ seeds) comes from the run seed and the
refresh count, and k-means runs single-threaded, so a resumed run repeats
the uninterrupted one bit for bit.

Multi-host: each process trains on its own images with the gradients
averaged over processes (`process_allgather`), so the autoencoder stays the
same everywhere; the codes are gathered and every process clusters the whole
training set identically.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from maxl_jax import hierarchy
from maxl_jax.errors import UsageError
from maxl_jax.labels.autoencoder_steps import (
  ae_loss_and_grads,
  ae_update,
  encode,
)
from maxl_jax.labels.base import LabelSource, TrainingImages, one_hot
from maxl_jax.labels.host import host, like, process_mean, random_state
from maxl_jax.networks.autoencoder import AutoEncoder

LabelState = dict[str, np.ndarray]
_INIT, _SAMPLE, _CLUSTER = 0, 1, 2  # Salts of the seeded random streams.


@dataclasses.dataclass(frozen=True)
class KMeansSource(LabelSource):
  """One-hot labels: the k-means cluster of each image within its class.

  Attributes:
    seed: the run seed (autoencoder init and batches, k-means++).
    ae: the autoencoder module.
    opt: the autoencoder's optimiser.
    num_train: global number of training examples (size of `assign`).
    steps_per_epoch: training steps per epoch (the default refresh period).
    ae_steps: autoencoder steps before the first clustering.
    ae_steps_per_refresh: autoencoder steps at each refresh.
    ae_batch_size: global autoencoder batch (split over processes).
    refresh_every: steps between refreshes; 0 = once per epoch.
    n_init: k-means++ restarts of the first clustering (refreshes start
      from the previous centroids).
    max_iter: Lloyd iterations per clustering at most.
    encode_batch_size: images per encoder call when computing the codes.
  """

  seed: int = 0
  ae: AutoEncoder | None = None
  opt: optax.GradientTransformation | None = None
  num_train: int = 0
  steps_per_epoch: int = 1
  ae_steps: int = 0
  ae_steps_per_refresh: int = 0
  ae_batch_size: int = 128
  refresh_every: int = 0
  n_init: int = 3
  max_iter: int = 100
  encode_batch_size: int = 1000

  def targets(self, label_state, theta2, model_state2, batch, *, problem):
    return one_hot(label_state['assign'][batch['index']], self.num_aux)

  def test_targets(self, label_state, theta2, model_state2, batch, *, problem):
    """Test images: the nearest centroid among their class's clusters.

    `assign` covers training images only; a test image's code gets the
    cluster k-means would predict for it (squared Euclidean distance).
    """
    codes = self.ae.apply(
      {'params': label_state['ae_params']}, batch['image'], method='encode'
    )
    centroids = label_state['centroids']
    dist = (
      jnp.sum(codes**2, -1, keepdims=True)
      - 2 * jnp.einsum('nd,kd->nk', codes, centroids, precision='highest')
      + jnp.sum(centroids**2, -1)
    )
    own = jnp.asarray(hierarchy.class_mask(self.psi))[batch['label']]
    aux = jnp.argmin(jnp.where(own, dist, jnp.inf), -1)
    return one_hot(aux, self.num_aux)

  def _init_params(self, key):
    return self.ae.init(key, jnp.zeros((1, 32, 32, self.ae.channels)))['params']

  def abstract_state(self) -> LabelState:
    """The state's shapes: autoencoder, Adam, centroids, assignments."""
    params = jax.eval_shape(self._init_params, jax.random.key(0))
    return {
      'ae_params': params,
      'ae_opt': jax.eval_shape(self.opt.init, params),
      'centroids': jax.ShapeDtypeStruct(
        (self.num_aux, self.ae.latent_dim), np.float32
      ),
      'assign': jax.ShapeDtypeStruct((self.num_train,), np.int32),
      'refreshes': jax.ShapeDtypeStruct((), np.int32),
    }

  def init_state(self, images: TrainingImages) -> LabelState:
    """Trains the autoencoder `ae_steps` steps and clusters the codes."""
    key = jax.random.fold_in(jax.random.key(self.seed), _INIT)
    params = jax.jit(self._init_params)(key)
    params, opt_state = self._train(
      params, self.opt.init(params), images.images, self.ae_steps, 0
    )
    latents, labels = self.global_codes(params, images)
    centroids, assign = self.cluster(latents, labels, None, 0)
    return host(
      {
        'ae_params': params,
        'ae_opt': opt_state,
        'centroids': centroids,
        'assign': assign,
        'refreshes': np.zeros((), np.int32),
      }
    )

  def due(self, step: int) -> bool:
    """Whether the refresh after 0-based step `step` re-clusters."""
    every = self.refresh_every or self.steps_per_epoch
    return (step + 1) % every == 0

  def refresh(self, label_state, step: int, images: TrainingImages):
    """Continues the autoencoder and re-clusters when `due(step)`.

    Randomness comes from `self.seed` and the refresh count (module doc).
    """
    if not self.due(step):
      return label_state
    old = host(label_state)
    count = int(old['refreshes']) + 1
    params, opt_state = self._train(
      old['ae_params'],
      old['ae_opt'],
      images.images,
      self.ae_steps_per_refresh,
      count,
    )
    latents, labels = self.global_codes(params, images)
    centroids, assign = self.cluster(latents, labels, old['centroids'], count)
    new = host(
      {
        'ae_params': params,
        'ae_opt': opt_state,
        'centroids': centroids,
        'assign': assign,
        'refreshes': np.asarray(count, np.int32),
      }
    )
    return jax.tree.map(like, new, label_state)

  def _train(self, params, opt_state, images, steps: int, count: int):
    """`steps` Adam steps on random batches of this process's images."""
    rng = np.random.default_rng(
      [int(self.seed) % (1 << 64), _SAMPLE, count, jax.process_index()]
    )
    size = max(1, self.ae_batch_size // jax.process_count())
    for _ in range(steps):
      rows = np.sort(rng.integers(0, len(images), size=size))
      _, grads = ae_loss_and_grads(params, images[rows], ae=self.ae)
      grads = process_mean(grads)
      params, opt_state = ae_update(params, opt_state, grads, opt=self.opt)
    return params, opt_state

  def codes(self, params, images: np.ndarray) -> np.ndarray:
    """Latent codes float32 [n, latent_dim] of uint8 images [n, 32, 32, C]."""
    n = len(images)
    size = min(self.encode_batch_size, n)
    out = []
    for start in range(0, n, size):  # Fixed-size chunks: one compilation.
      part = images[start : start + size]
      pad = np.zeros((size - len(part), *part.shape[1:]), part.dtype)
      z = encode(params, np.concatenate([part, pad]), ae=self.ae)
      out.append(np.asarray(z)[: len(part)])
    return np.concatenate(out).astype(np.float32)

  def global_codes(self, params, images: TrainingImages):
    """Codes [num_train, D] and primary labels [num_train] of ALL images.

    Every process encodes its share; the shares are gathered so that every
    process holds the global arrays, ordered by global example index.
    """
    latents = self.codes(params, images.images)
    labels = np.asarray(images.labels, np.int32)
    index = np.asarray(images.indices, np.int32)
    if jax.process_count() > 1:  # Pad to a common share size, gather.
      share = -(-self.num_train // jax.process_count())
      pad = share - len(index)
      latents = np.pad(latents, ((0, pad), (0, 0)))
      labels, index = (
        np.pad(labels, (0, pad)),
        np.pad(index, (0, pad), constant_values=-1),
      )
      gathered = multihost_utils.process_allgather((latents, labels, index))
      latents, labels, index = (
        np.reshape(x, (-1, *x.shape[2:])) for x in gathered
      )
      real = index >= 0
      latents, labels, index = latents[real], labels[real], index[real]
    if np.unique(index).size != self.num_train or len(index) != self.num_train:
      raise RuntimeError(
        f'the processes hold {len(index)} training images, not the '
        f'{self.num_train} of the dataset, each once.'
      )
    order = np.argsort(index)
    return latents[order], labels[order]

  def cluster(self, latents, labels, centroids, count: int):
    """k-means of each class's codes into psi[c] clusters.

    Args:
      latents: float32 [n, D] codes.
      labels: int [n] primary classes.
      centroids: float32 [K, D] previous centroids (warm start), or None
        for k-means++ with `n_init` restarts.
      count: the refresh count (seeds k-means++).

    Returns:
      (centroids float32 [K, D], assign int32 [n] auxiliary classes).

    Raises:
      UsageError: a class has fewer images than clusters.
    """
    from sklearn.cluster import KMeans  # Slow imports: only here.
    from threadpoolctl import threadpool_limits

    offs = hierarchy.offsets(self.psi)
    new = np.zeros((self.num_aux, latents.shape[1]), np.float32)
    assign = np.zeros(len(labels), np.int32)
    with threadpool_limits(1):  # Deterministic sums: one thread.
      for c, k in enumerate(self.psi.tolist()):
        rows = np.flatnonzero(labels == c)
        if rows.size < k:
          raise UsageError(
            f'K-Means: class {c} has {rows.size} training images, fewer '
            f'than its {k} clusters; give it fewer auxiliary classes.'
          )
        part = slice(offs[c], offs[c] + k)
        kmeans = KMeans(
          k,
          init='k-means++' if centroids is None else centroids[part],
          n_init=self.n_init if centroids is None else 1,
          max_iter=self.max_iter,
          random_state=random_state(self.seed, _CLUSTER, count, c),
        ).fit(latents[rows])
        new[part] = kmeans.cluster_centers_
        assign[rows] = offs[c] + kmeans.labels_
    return new, assign


@dataclasses.dataclass(frozen=True)
class KMeansOptions:
  """The K-Means baseline's settings (DESIGN §4).

  Attributes:
    ae_steps: autoencoder steps before the first clustering.
    ae_steps_per_refresh: autoencoder steps at each refresh.
    refresh_every: training steps between re-clusterings; 0 = each epoch.
    latent_dim: size of the clustered code.
    ae_widths: the encoder's stride-2 convolutions (1 to 5 on 32x32).
    ae_lr: the autoencoder's Adam learning rate.
    ae_batch_size: global autoencoder batch (split over processes).
    n_init: k-means++ restarts of the first clustering.
    max_iter: Lloyd iterations per clustering at most.
    encode_batch_size: images per encoder call.
  """

  ae_steps: int = 2000
  ae_steps_per_refresh: int = 100
  refresh_every: int = 0
  latent_dim: int = 64
  ae_widths: tuple[int, ...] = (16, 32, 64)
  ae_lr: float = 1e-3
  ae_batch_size: int = 128
  n_init: int = 3
  max_iter: int = 100
  encode_batch_size: int = 1000

  def check(self):
    """Raises UsageError for a value out of range."""
    for field in ('ae_steps', 'ae_steps_per_refresh', 'refresh_every'):
      if getattr(self, field) < 0:
        raise UsageError(
          f'K-Means {field} must be >= 0, got {getattr(self, field)}.'
        )
    for field in (
      'latent_dim',
      'ae_batch_size',
      'n_init',
      'max_iter',
      'encode_batch_size',
    ):
      if getattr(self, field) < 1:
        raise UsageError(
          f'K-Means {field} must be >= 1, got {getattr(self, field)}.'
        )
    widths = tuple(self.ae_widths)
    if not 1 <= len(widths) <= 5 or min(widths) < 1:
      raise UsageError(
        f'K-Means ae_widths {widths}: give 1 to 5 positive widths (one '
        'stride-2 convolution each on 32x32 images).'
      )


def make_source(
  options: KMeansOptions, info, psi, *, seed: int, steps_per_epoch: int
) -> KMeansSource:
  """The K-Means source with `options` for the dataset `info` and `psi`.

  Raises:
    UsageError: an option out of range, or images that are not 32x32.
  """
  options.check()
  if info.image_shape[0] != 32:
    raise UsageError(
      f'K-Means needs 32x32 images, got {info.image_shape[:2]}.'
    )
  ae = AutoEncoder(
    widths=tuple(int(w) for w in options.ae_widths),
    latent_dim=int(options.latent_dim),
    channels=info.image_shape[-1],
  )
  return KMeansSource(
    psi=hierarchy.validate_psi(psi, info.num_classes),
    seed=int(seed),
    ae=ae,
    opt=optax.adam(options.ae_lr),
    num_train=info.num_train,
    steps_per_epoch=steps_per_epoch,
    ae_steps=int(options.ae_steps),
    ae_steps_per_refresh=int(options.ae_steps_per_refresh),
    ae_batch_size=int(options.ae_batch_size),
    refresh_every=int(options.refresh_every),
    n_init=int(options.n_init),
    max_iter=int(options.max_iter),
    encode_batch_size=int(options.encode_batch_size),
  )


def build(
  info,
  psi,
  *,
  seed,
  psi_choice,
  kmeans_options: KMeansOptions | None = None,
  steps_per_epoch: int = 1,
):
  """`make_source` with `kmeans_options` (None: the defaults) and θ1's
  `steps_per_epoch` (the default refresh period); psi_choice unused."""
  del psi_choice
  return make_source(
    kmeans_options or KMeansOptions(),
    info,
    psi,
    seed=seed,
    steps_per_epoch=steps_per_epoch,
  )
