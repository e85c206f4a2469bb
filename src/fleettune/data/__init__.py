"""Data: loading labelled text data sets, splitting them among clients and batching them for a model."""

from fleettune.data.batches import Batch, Batcher, iterate_batches
from fleettune.data.partitions import PARTITIONERS, client_test_shares, parse_partition, partition
from fleettune.data.sampling import limit
from fleettune.data.sources import DEFAULT_DATASET, SOURCES, Source, load_dataset, resolve_source
from fleettune.data.types import Split, TextDataset, subset

__all__ = [
    "DEFAULT_DATASET",
    "PARTITIONERS",
    "SOURCES",
    "Batch",
    "Batcher",
    "Source",
    "Split",
    "TextDataset",
    "client_test_shares",
    "iterate_batches",
    "limit",
    "load_dataset",
    "parse_partition",
    "partition",
    "resolve_source",
    "subset",
]
