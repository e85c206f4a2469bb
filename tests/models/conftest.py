"""Model fixtures: the tiny BERT model folder of the scheme tests."""

from __future__ import annotations

from tests.schemes import conftest as schemes

tiny_model_dir = schemes.tiny_model_dir
