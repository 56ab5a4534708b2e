"""Observing a run: progress events and timing (`progress`, no Prefect) and Prefect logging, artifacts and
run bookkeeping (`runlog`). Every room may report progress; only stages, ops helpers and flows log to Prefect."""
