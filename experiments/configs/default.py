"""Default configuration: every field, its meaning and the original's value.

Experiment configs import this module and override only what differs.
Every field can be overridden on the command line, e.g.
`--config.train.epochs=3 --config.maxl.meta_grad=structured`.
"""

import ml_collections


def get_config():
  """Returns the default (original code's) MAXL configuration."""
  config = ml_collections.ConfigDict()
  # Seeds parameters, data order, augmentation, baselines.
  config.seed = 0
  # The kind of run (maxl_jax/training/contract.py): maxl (config.method,
  # below) | combiner (a loss combiner: combine_fashion.py).
  config.run = 'maxl'
  # single | maxl | uniform | random | kmeans | human, and the controls
  # frozen | entropy_only | soft_human (README, "Methods").
  config.method = 'maxl'

  config.data = ml_collections.ConfigDict()
  # mnist | svhn_cropped | cifar10 | cifar100 | imagenet_resized/32x32 |
  # ucf101 | cinic10 | fashion_mnist | digits; your own: arrays | folder
  # (at data.path) | tfds:NAME (any TFDS image classification dataset).
  config.data.name = 'cifar100'
  # TFDS data_dir; '' = TFDS default (~/tensorflow_datasets).
  config.data.data_dir = ''
  # Image-folder / IDX directory (cinic10, fashion_mnist).
  config.data.local_dir = ''
  # Global batch, divisible by the device count.
  config.data.batch_size = 100
  # Global evaluation batch.
  config.data.eval_batch_size = 500
  # crop_flip (4-px pad crop + flip) | crop (no flip) | none.
  config.data.augment = 'crop_flip'
  # Low-data setting: class-balanced fraction.
  config.data.train_fraction = 1.0
  # Low-data setting: N images per class (0 = all).
  config.data.per_class = 0
  # The classes that train_fraction / per_class and meta_fraction keep in
  # proportion: primary | fine (the hidden fine classes of data.hierarchy,
  # so that each gets the same count) | auto (fine for digit_pairs, the
  # positive control; primary otherwise).
  config.data.balance = 'auto'
  # Class-balanced fraction of the training set held out for the meta
  # objective's primary loss (AuxiLearn's auxiliary set); 0 = MAXL as
  # published (meta loss on the training batch). implicit needs it > 0.
  config.data.meta_fraction = 0.0
  # Held-out batch; 0 = data.batch_size.
  config.data.meta_batch_size = 0
  # CIFAR-100 level of the primary task.
  config.data.primary_level = 20
  # CIFAR-100 level of the Human auxiliary task.
  config.data.aux_level = 100
  # Label hierarchy: regroups the classes into coarse primary classes; the
  # stored labels become hidden fine classes (Human's targets, the ground
  # truth of label recovery). '' = the dataset's default (cifar100: its
  # primary_level / aux_level; others: none). A name: fashion_mnist pairs |
  # types | parity; mnist, digits parity | halves; cifar10 animals_vehicles.
  # Or one coarse id per class, comma-separated: '0,1,2,1,2,3,0,3,4,4'.
  config.data.hierarchy = ''
  # TFDS dataset not prepared in data_dir: True = download_and_prepare it,
  # False = stop with a message saying how to prepare it offline.
  config.data.download = True
  # ucf101: frames per clip (1 = the middle one).
  config.data.video_frames = 1
  # Your own data: data.name=arrays (an .npz file: x_train, y_train,
  # x_test, y_test; optional fine_train, fine_test, class_names) or folder
  # (a directory of one sub-folder of images per class, under train/ and
  # test/ or split by test_fraction) at this path.
  config.data.path = ''
  # data.name=folder without train/ and test/: the fraction of each class
  # held out for testing (a fixed split, the same for every seed).
  config.data.test_fraction = 0.2
  # data.name=tfds:NAME: the ClassLabel feature that holds the labels.
  config.data.label_key = 'label'

  config.model = ml_collections.ConfigDict()
  # convnet4 | vgg16 | resnet32.
  config.model.name = 'vgg16'
  # xla | im2col | im2col_bf16 | im2col_tiled | auto (= im2col on CPU).
  # im2col_tiled: patches rebuilt per batch tile (much less memory in the
  # meta step; benchmarks/README.md, "Remat"). im2col_bf16: bf16
  # matmul operands, f32 accumulation; 1.1-1.3x faster steps on CPUs with
  # AMX, much less precise gradients on VGG-16 (README, Benchmarks); not
  # with maxl.meta_grad='unrolled'.
  config.model.conv_impl = 'auto'
  # float32 | bfloat16 (params stay f32) | float64 (params too; needs
  # JAX_ENABLE_X64=1: exact references).
  config.model.compute_dtype = 'float32'
  # Hidden units of each head's FC layer (0 = one Dense layer); the
  # benchmarks use 512 for vgg16 and 256 for convnet4.
  config.model.head_hidden = 512
  # Channel widths of the trunk's stages; () = the architecture's own
  # (convnet4: 32, 64, 128, 256; resnet32: 16, 32, 64; vgg16: fixed).
  config.model.widths = ()
  # Rematerialisation of the trunk's blocks (jax.checkpoint): none | blocks
  # (keep each block's input, recompute the rest in the backward passes) |
  # blocks_dots (also keep the convolutions' outputs). Same parameters and
  # results; less memory, more time (benchmarks/README.md, "Remat").
  config.model.remat = 'none'

  config.maxl = ml_collections.ConfigDict()
  # Balanced hierarchy: psi[c] for every class.
  config.maxl.psi_per_class = 5
  # psi of maxl, uniform, random, kmeans: balanced (psi_per_class for every
  # class) | hierarchy (data.hierarchy's: psi[c] = fine classes under c;
  # random then ignores baseline.aux_classes) | P comma-separated positive
  # ints, one per primary class: '5,15,5,...'. human always uses the
  # hierarchy's.
  config.maxl.psi = 'balanced'
  # Weight of the entropy regulariser in J.
  config.maxl.lam = 0.2
  # Focal-loss exponent (0 = cross-entropy).
  config.maxl.gamma = 2.0
  # Meta-gradient estimator: unrolled | structured | first_order | implicit
  # (DESIGN §2).
  # Exact, and fastest exact (README).
  config.maxl.meta_grad = 'structured'
  # first_order: eps = fd_eps / ||v||.
  config.maxl.fd_eps = 0.01
  # paper (theta1 pass, then theta2 pass) | interleaved.
  config.maxl.schedule = 'paper'
  # interleaved: a theta2 update after every k theta1 steps (1 = every step).
  config.maxl.meta_every = 1
  # method=maxl only: g also outputs a weight w_n in (0, 1) per example
  # (sigmoid of one more unit, 0.9 at init), learnt by the same
  # meta-gradient; L_aux = mean_n w_n * focal(aux_n, g_n). H stays unweighted.
  config.maxl.example_weights = False
  # Live variants of the meta-signal (docs/RESULTS.md, part 3); the defaults
  # are the paper's. The meta objective's L_pri(theta1+): focal (gamma, as
  # published) | ce (cross-entropy).
  config.maxl.meta_loss = 'focal'
  # The lookahead's step is lookahead_scale * alpha (1 / (1 - momentum) =
  # how far one gradient moves theta1 in the long run under momentum).
  config.maxl.lookahead_scale = 1.0
  # K of the lookahead theta1+: 1 = one SGD step of size alpha (the paper);
  # K > 1 = K updates of theta1's own optimiser (momentum included) on the
  # meta step's batch, differentiated exactly (meta_grad structured or
  # unrolled; DESIGN §2h).
  config.maxl.lookahead_steps = 1
  # theta2's gradient: sum (meta part + lam * grad H, as published) |
  # normalized (each part at unit norm, the entropy part times lam).
  config.maxl.balance = 'sum'

  # The inverse-Hessian-vector product of the IFT hypergradient, shared by
  # meta_grad = implicit (AuxiLearn's; needs data.meta_fraction > 0) and the
  # loss combiner (run = 'combiner').
  config.inverse_hvp = ml_collections.ConfigDict()
  # neumann | cg.
  config.inverse_hvp.solver = 'neumann'
  # K of the truncated series (AuxiLearn).
  config.inverse_hvp.neumann_steps = 3
  # eta of the series (AuxiLearn: 0.1).
  config.inverse_hvp.neumann_lr = 0.1
  # Conjugate-gradient iterations.
  config.inverse_hvp.cg_steps = 10
  # Both solvers invert H + damping * I (the Hessian of a network is
  # indefinite early in training).
  config.inverse_hvp.damping = 0.1
  # meta_grad = implicit's hypergradient clip (0 = none; the combiner's is
  # combiner.max_grad_norm).
  config.inverse_hvp.max_grad_norm = 10.0

  # theta1 (multi-task network) optimiser: SGD, lr halved every 50 epochs.
  config.primary_opt = ml_collections.ConfigDict()
  config.primary_opt.lr = 0.01
  config.primary_opt.momentum = 0.0
  config.primary_opt.weight_decay = 0.0
  config.primary_opt.decay_every_epochs = 50
  config.primary_opt.decay_factor = 0.5

  # theta2 (label-generation network) optimiser.
  config.label_opt = ml_collections.ConfigDict()
  # sgd (with momentum, as PyTorch's) | adam (scale-free: b1 = 0.9, b2 =
  # 0.999; momentum is then unused).
  config.label_opt.name = 'sgd'
  config.label_opt.lr = 1e-3
  config.label_opt.momentum = 0.0
  config.label_opt.weight_decay = 5e-4
  config.label_opt.decay_every_epochs = 50
  config.label_opt.decay_factor = 0.5

  # Baselines (method = random | kmeans | human; DESIGN §4).
  config.baseline = ml_collections.ConfigDict()
  # random: total K (0 = psi_per_class * P).
  config.baseline.aux_classes = 0
  # soft_human: eps of (1 - eps) * one-hot + eps / psi[y], in (0, 1].
  config.baseline.soft_human_eps = 0.5

  # K-Means baseline: k-means within each class on a convolutional
  # autoencoder's codes (maxl_jax/labels/kmeans.py); K = psi_per_class * P.
  config.kmeans = ml_collections.ConfigDict()
  # AE steps before the first clustering.
  config.kmeans.ae_steps = 2000
  # AE steps at each refresh, before re-clustering (with refresh_every=1,
  # 1-2 steps keep the cost per training step small).
  config.kmeans.ae_steps_per_refresh = 100
  # Training steps between re-clusterings; 0 = once per epoch, 1 = after
  # every iteration (the paper; costs one encoding of the training set each).
  config.kmeans.refresh_every = 0
  # Size of the latent code that is clustered.
  config.kmeans.latent_dim = 64
  # Stride-2 encoder convolutions.
  config.kmeans.ae_widths = (16, 32, 64)
  # Adam learning rate of the autoencoder.
  config.kmeans.ae_lr = 1e-3
  # Global AE batch (split over hosts).
  config.kmeans.ae_batch_size = 128
  # k-means++ restarts of the first clustering.
  config.kmeans.n_init = 3
  # Lloyd iterations per clustering at most.
  config.kmeans.max_iter = 100
  # Images per encoder call.
  config.kmeans.encode_batch_size = 1000

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 200
  # 0 = one full pass over the training set.
  config.train.steps_per_epoch = 0
  config.train.eval_every_epochs = 1
  # stop | skip_step.
  config.train.on_nonfinite = 'stop'
  # JAX's persistent compilation cache ('' = off; experiments.sweep turns it
  # on for its runs): reruns and runs of the same programs skip compiling.
  config.train.compile_cache_dir = ''
  # Label smoothing eps in [0, 1) of the primary targets, (1 - eps) one-hot +
  # eps / P, in the theta1 step's loss only (every method); the meta
  # objective's L_pri(theta1+) and evaluation use one-hot targets.
  config.train.label_smoothing = 0.0

  config.checkpoint = ml_collections.ConfigDict()
  # Steps between checkpoints; there is one at the end too.
  config.checkpoint.every_steps = 1000
  # Epochs between epoch-end checkpoints: 1 = every epoch; more for runs of
  # many short epochs (a resumed run repeats the epochs since the last one).
  config.checkpoint.every_epochs = 1
  # Number of checkpoints kept.
  config.checkpoint.keep = 3

  config.log = ml_collections.ConfigDict()
  # Steps between progress lines.
  config.log.progress_every_steps = 50
  # The terminal shows the whole log (as --verbosity does), not only the
  # start, progress, evaluation and result lines; <workdir>/log.txt has it
  # either way.
  config.log.verbose = False
  # Test images on which g's label drift from step 0 is measured
  # (test/label_drift, runs with a label generator).
  config.log.drift_images = 1000
  # What trains g (signal/grad_meta_norm, signal/grad_entropy_norm,
  # signal/grad_parts_cosine, signal/meta_share) on every this-many-th θ2
  # step; 0 = never. A logged step takes one more backward pass through g.
  config.log.meta_signal_every = 0
  # TensorBoard event files beside metrics.jsonl (CLU's writer imports
  # TensorFlow: ~4 s and ~0.6 GB of a process).
  config.log.tensorboard = True

  # Comma-separated methods to run one after another into workdir/<method>,
  # printing their test accuracies side by side ('' = just config.method).
  config.compare_methods = ''
  return config
