"""The Keras boundary: every module that imports Keras as it loads, and nothing else (the model, its
augmentation, the input batches, the callbacks, the run's schedule and work folder, several devices).

Import these only after `catsdogs.backend.select()` has chosen Keras' backend; modules outside this package
import them inside functions, after that call (tests/test_architecture.py checks both)."""
