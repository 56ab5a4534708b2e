"""What ``--smoke`` means for every benchmark: the same code at tiny sizes, in seconds, so that the test suite
runs each benchmark (``tests/test_benchmarks.py``) and a benchmark that breaks fails CI. Its numbers mean
nothing."""

# config overrides of a smoke run: one small encoder, short Keras fits
SET = [
    "encoder.kind='mlp'",
    "encoder.hidden=[16]",
    "encoder.epochs=3",
    "encoder.batch_size=32",
    "linear_hinge.epochs=3",
    "rff_svm.epochs=2",
    "rff_svm.n_components=64",
]
# the benchmarks that time the loop and the engines, not the approaches (loop, speed): the main path and the
# raw SVC only, so that a smoke run trains one network (accuracy and scale keep every approach: their tables
# have a row or a column per approach)
LOOP_SET = [*SET, "evaluate.approaches=['features_svc', 'raw_svc']"]
