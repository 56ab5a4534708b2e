"""The artifact store: content-addressed artifacts, the stage cache, and the one way to read an artifact's files.

* `tasks.store.artifacts` - `ArtifactRef`, `ArtifactWriter`, hashing (no Prefect);
* `tasks.store.tables`    - the dataset layout (label and split columns) and reading tables by name (no Prefect);
* `tasks.store.outputs`   - the files every model stage writes for ``evaluate`` (no Prefect);
* `tasks.store.cache`     - cache keys over content and code, JSON cache records, the ``stage`` task decorator;
* `tasks.obs.runlog`    - logging and Prefect artifacts from inside a stage.
"""
