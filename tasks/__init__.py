"""marginflow stages: one module per stage, plus the config and the artifact store.

Importing this package is cheap: Keras, JAX and scikit-learn are imported inside the
functions that use them. It only makes JAX the default Keras backend when the user
has not chosen one.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
