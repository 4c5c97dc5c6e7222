"""CINIC-10, ResNet-32, psi = 5 (paper Table 1: Single 85.12%, MAXL 85.83%).

COMMAND:
  python -m experiments.run --config=experiments/configs/cinic10.py \
    --workdir=/tmp/maxl_cinic10 --config.data.local_dir=/path/to/CINIC-10

CINIC-10 is not in TFDS: download and unpack its image-folder release
(https://github.com/BayesWatch/cinic-10) and point `data.local_dir` at it.
"""

from experiments.configs import default


def get_config():
  """CINIC-10 train/ and test/ folders, crop+flip, ResNet-32."""
  config = default.get_config()
  config.data.name = 'cinic10'
  config.model.name = 'resnet32'
  config.model.head_hidden = 0
  config.maxl.psi_per_class = 5
  return config
