"""Pure logic: data sources and validation, splitting, scaling, networks and encoders, margin
losses and Keras layers, SVM fitting and search, metrics and report rendering.

Nothing here imports Prefect, a stage module or `tasks.ops`; heavy libraries (Keras,
scikit-learn, matplotlib) are imported inside the functions that use them.
"""
