"""Federated datasets: centralized arrays, partitioners, ClientData and client preprocessing."""

from fl_tff.data.arrays import ArrayDataset, load_digits
from fl_tff.data.datasets import DATASETS, load_dataset
from fl_tff.data.federated import FederatedData, build_federated_data, client_data_from_arrays
from fl_tff.data.partition import PARTITIONS, PartitionError, summarize
from fl_tff.data.preprocessing import derive_seed
