"""Computing on arrays, iterators and plain values: validating and splitting rows, scaling, networks and
encoders, margin losses and Keras layers, SVM fitting and search, metrics and report rendering.

Nothing here opens an artifact or imports `tasks.store`, a stage module, `tasks.ops` or Prefect; heavy libraries
(Keras, scikit-learn, matplotlib) are imported inside the functions that use them.
"""
