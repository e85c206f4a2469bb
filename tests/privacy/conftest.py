"""The tiny model, data and run helper of the scheme tests, for runs with privacy mechanisms on."""

from tests.schemes.conftest import run_scheme, tiny_data_dir, tiny_model_dir  # noqa: F401  (fixtures)
