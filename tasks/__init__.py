"""marginflow's tasks: one thin Prefect task module per stage (``tasks/<stage>.py``) over four rooms, ``core``
(computing on arrays and plain values) beside ``store`` (artifacts, the cache, reading sources), ``ops``
(bundle, registry, promotion, predict) above them and ``obs`` (progress and logging) below, and the base
modules ``config``, ``config_text``, ``catalog``, ``schema``, ``errors`` and ``faults``.

Importing this package is cheap: Keras, JAX and scikit-learn are imported inside the
functions that use them. It only makes JAX the default Keras backend when the user
has not chosen one.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
