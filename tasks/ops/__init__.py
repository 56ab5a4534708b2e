"""Operations on trained models: the bundle, the registry, champion/challenger promotion and
batch prediction. No stage module and no Prefect is imported here, so ``marginflow models``,
``promote`` and ``predict`` start fast.
"""
