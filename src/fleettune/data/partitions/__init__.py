"""Splitting training rows among clients (iid, label skew, quantity skew, natural) and test rows to match."""

from fleettune.data.partitions.registry import PARTITIONERS, Partitioner, PartitionKind
from fleettune.data.partitions.spec import parse_partition, partition
from fleettune.data.partitions.test_shares import client_test_shares

__all__ = [
    "PARTITIONERS",
    "PartitionKind",
    "Partitioner",
    "client_test_shares",
    "parse_partition",
    "partition",
]
