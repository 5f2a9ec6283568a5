"""Partitioner properties: determinism, exact cover, no empty client, the intended skew."""

import types

import numpy as np
import pytest

from fl_tff import options
from fl_tff.data import partition

LABELS = np.random.default_rng(0).integers(0, 10, size=1000)
CASES = [('iid', {}), ('dirichlet', {'alpha': 0.3}), ('shards', {'classes_per_client': 2}),
         ('quantity', {'lognormal_sigma': 1.5})]


def _make(name, kwargs, seed=0, num_clients=25, labels=LABELS):
    """The partition `--partition=name` builds (the registry's builder, as a run calls it)."""
    dataset = types.SimpleNamespace(y=labels)
    return partition.PARTITIONS.get(name).build(dataset, num_clients, seed, **kwargs)


@pytest.mark.parametrize('name,kwargs', CASES)
def test_every_example_assigned_exactly_once_and_no_empty_client(name, kwargs):
    parts = _make(name, kwargs)
    assert len(parts) == 25
    assert all(p.size > 0 for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(LABELS.size))


@pytest.mark.parametrize('name,kwargs', CASES)
def test_deterministic_for_a_seed_and_different_across_seeds(name, kwargs):
    a, b, c = _make(name, kwargs, seed=7), _make(name, kwargs, seed=7), _make(name, kwargs, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def _mean_classes(parts):
    return partition.summarize(LABELS, parts, 10)['classes_per_client_mean']


def test_dirichlet_label_skew_grows_as_alpha_shrinks():
    skewed = _mean_classes(_make('dirichlet', {'alpha': 0.05}))
    mild = _mean_classes(_make('dirichlet', {'alpha': 1.0}))
    near_iid = _mean_classes(_make('dirichlet', {'alpha': 100.0}))
    assert skewed < mild < near_iid
    assert near_iid == pytest.approx(10.0)
    assert skewed < 4


@pytest.mark.parametrize('k', [1, 2, 3])
def test_shards_give_exactly_k_classes_per_client(k):
    parts = _make('shards', {'classes_per_client': k}, num_clients=20)
    assert [np.unique(LABELS[p]).size for p in parts] == [k] * 20


def test_iid_sizes_are_balanced_and_quantity_skew_sizes_are_not():
    iid_sizes = [p.size for p in _make('iid', {})]
    assert max(iid_sizes) - min(iid_sizes) <= 1
    skew_sizes = np.array([p.size for p in _make('quantity', {'lognormal_sigma': 1.5})])
    assert skew_sizes.max() > 4 * skew_sizes.min()
    # Labels stay IID under quantity skew: big clients see (nearly) every class.
    big = _make('quantity', {'lognormal_sigma': 1.5})[int(np.argmax(skew_sizes))]
    assert np.unique(LABELS[big]).size == 10


@pytest.mark.parametrize('name,kwargs,match', [
    ('dirichlet', {'alpha': 0.0}, 'alpha must be > 0'),
    ('dirichlet', {'alpha': -1.0}, 'alpha must be > 0'),
    ('shards', {'classes_per_client': 11}, r'classes_per_client must be in \[1, 10\]'),
    ('shards', {'classes_per_client': 0}, r'classes_per_client must be in \[1, 10\]'),
    ('quantity', {'lognormal_sigma': -0.1}, 'sigma must be >= 0'),
])
def test_bad_parameters_raise_clear_errors(name, kwargs, match):
    with pytest.raises(partition.PartitionError, match=match):
        _make(name, kwargs)


def test_an_unknown_partition_names_the_valid_choices_from_the_registry():
    with pytest.raises(options.OptionError, match="unknown partition 'nope'; valid choices: " +
                       ', '.join(sorted(partition.PARTITIONS.names))):
        _make('nope', {})


def test_too_many_clients_is_an_error_not_an_empty_client():
    with pytest.raises(partition.PartitionError, match='would be empty'):
        _make('iid', {}, num_clients=11, labels=LABELS[:10])
    with pytest.raises(partition.PartitionError, match='no client'):
        _make('shards', {'classes_per_client': 2}, num_clients=2)


def test_summary_reports_sizes_and_label_histograms():
    parts = _make('shards', {'classes_per_client': 2}, num_clients=10)
    summary = partition.summarize(LABELS, parts, 10)
    assert summary['sizes'] == [p.size for p in parts]
    hists = np.array(summary['label_histograms'])
    assert hists.shape == (10, 10)
    assert hists.sum() == LABELS.size
    assert np.array_equal(hists.sum(axis=0), np.bincount(LABELS, minlength=10))
    text = partition.format_summary(summary, max_rows=3)
    assert '10 clients, 1000 examples' in text and '... 7 more' in text
