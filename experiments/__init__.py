"""absl-flag experiment drivers. They parse flags and call the fl_tff library; nothing else."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Quiet TensorFlow's C++ start-up chatter.
