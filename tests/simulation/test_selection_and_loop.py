"""Client selection is seeded per round; the loop evaluates on schedule and reports each round."""


from fl_tff import models, simulation
from fl_tff.algorithms import build_fedavg


def _labels(tasks, select):
    return [next(iter(select.client_round(t)))['y'].numpy().tolist() for t in tasks]


def test_selection_is_deterministic_per_round_and_varies_across_rounds(skewed_digits):
    def make(seed):
        return simulation.build_training_selection_fn(
            skewed_digits.train, clients_per_round=3, epochs=1, batch_size=5, seed=seed)

    a, b, c = make(1), make(1), make(2)
    assert _labels(a(4), a) == _labels(b(4), b)
    assert _labels(a(4), a) != _labels(a(5), a)
    assert _labels(a(4), a) != _labels(c(4), c)
    assert len(a(1)) == 3


def test_loop_evaluates_every_k_rounds_and_at_the_end(tff_runtime, skewed_digits):
    model_fn, _ = models.model_fn_for_dataset('logreg', skewed_digits.element_spec, 10)
    select = simulation.build_training_selection_fn(
        skewed_digits.train, clients_per_round=2, epochs=1, batch_size=32, seed=0)
    seen = []
    _, history = simulation.run_training(
        simulation.compose(build_fedavg(model_fn), select.dataset_computation()), select,
        rounds=5, eval_every=2,
        evaluation_fn=lambda w: {'evaluated': 1.0}, on_round=lambda row, state: seen.append(row))
    assert [row['round'] for row in history] == [1, 2, 3, 4, 5]
    assert [('evaluated' in row) for row in history] == [False, True, False, True, True]
    assert seen == history
    assert all(row['clients'] == 2 and row['train_examples'] > 0 for row in history)


def test_a_ledger_hook_with_a_plain_selection_callable_is_refused():
    """The privacy ledger charges each round's plan; a plain callable has none, and the loop
    used to skip the ledger and its budget stop silently."""
    import pytest

    from fl_tff.simulation import run_training
    with pytest.raises(TypeError, match='before_round hooks .* need|charge each round.s plan'):
        run_training(object(), lambda round_num: [], rounds=1,
                     before_round=lambda plan, evaluate: {})
