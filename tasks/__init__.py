"""marginflow's tasks: one thin Prefect task module per stage (``tasks/<stage>.py``) over three
rooms, ``core`` (pure logic), ``store`` (artifacts and the cache) and ``ops`` (bundle, registry,
promotion, predict), and the base modules ``config``, ``catalog``, ``errors`` and ``faults``.

Importing this package is cheap: Keras, JAX and scikit-learn are imported inside the
functions that use them. It only makes JAX the default Keras backend when the user
has not chosen one.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
