"""UCF-101 frames, ResNet-32, psi = 3 (paper Table 1: Single 53.15%,
MAXL 55.39%).

COMMAND:
  python -m experiments.run --config=experiments/configs/ucf101.py \
    --workdir=/tmp/maxl_ucf101

Each clip contributes `data.video_frames` evenly spaced frames (1 = its middle
frame), resized to 32x32.
"""

from experiments.configs import default


def get_config():
  """TFDS `ucf101` split 1, ResNet-32."""
  config = default.get_config()
  config.data.name = 'ucf101'
  config.model.name = 'resnet32'
  config.model.head_hidden = 0
  config.maxl.psi_per_class = 3
  return config
