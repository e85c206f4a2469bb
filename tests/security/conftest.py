"""The tiny model and data of the scheme tests, for end-to-end attack runs."""

from tests.schemes.conftest import tiny_data_dir, tiny_model_dir  # noqa: F401  (fixtures)
