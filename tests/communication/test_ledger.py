"""The communication ledger counts the bytes of the representation actually sent."""



import pytest

from fl_tff import experiment
from fl_tff.communication import ledger
from fl_tff.config import ExperimentConfig
from fl_tff.rounds import RoundPlan

# The 2NN of width 32 on 8x8 digits: 64*32+32 + 32*32+32 + 32*10+10 values.
VALUES = 64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10


def test_byte_counts_for_known_sizes_and_encodings():
    assert VALUES == 3466
    plan = RoundPlan(1, ('a', 'b', 'c'), (('a', 2), ('b', 2)), dropped=1)
    plain = ledger.CommunicationLedger([VALUES], VALUES, ledger.plain_encoding(weighted=True))
    row = plain.charge(plan)
    assert row['uplink_bytes_per_client'] == (32 * VALUES + 32) // 8 == 13868
    assert row['uplink_bytes'] == 2 * 13868  # The dropped client sends nothing...
    assert row['downlink_bytes'] == 3 * 4 * VALUES  # ...but received the model.
    assert plain.charge(plan)['uplink_bytes_total'] == 4 * 13868
    # One secure sum of the values, the weight, the clipped fraction and the count (8 bits
    # each), plus TFF's count and two clip counts (1 bit each).
    secure = ledger.CommunicationLedger([VALUES], VALUES, ledger.secure_encoding(8))
    assert secure.charge(plan)['uplink_bytes_per_client'] == -(-(8 * (VALUES + 3) + 3) // 8) == 3470
    four_bits = ledger.UplinkEncoding('4-bit', 4, 64)
    assert four_bits.client_bytes([VALUES]) == -(-(4 * VALUES + 64) // 8)


def test_every_round_reports_bytes_and_the_summary_bytes_to_the_final_accuracy(tff_runtime, tmp_path):
    config = ExperimentConfig(hidden_units=32, rounds=4, eval_every=2, output_dir=str(tmp_path),
                              secure_agg=True, secure_bits=8, secure_range=1.0)
    result = experiment.run_experiment(config, log=lambda _: None)
    # The values, weight, clipped fraction and count at 8 bits each; TFF's 3 one-bit counts.
    per_client = -(-(8 * (VALUES + 3) + 3) // 8)
    totals = 0
    for row in result.history:
        assert row['uplink_bytes_per_client'] == per_client
        assert row['uplink_bytes'] == per_client * row['aggregated']
        assert row['downlink_bytes'] == 4 * VALUES * row['selected']
        totals += row['uplink_bytes']
        assert row['uplink_bytes_total'] == totals
    reached = result.summary['communication']['bytes_to_final_accuracy']
    assert reached['uplink_bytes'] <= totals and reached['test_accuracy'] >= result.summary['final_test_accuracy']
    assert result.summary['communication']['uplink_encoding'] == 'secure 8-bit'


def test_only_the_uploaders_a_process_names_are_billed_for_an_update():
    """E.g. a SecAgg round aborted before the masked inputs: the selected clients received the
    model, nobody uploaded."""
    plan = RoundPlan(1, ('a', 'b', 'c'), (('a', 2), ('b', 2)), dropped=1)
    plain = ledger.CommunicationLedger([VALUES], VALUES, ledger.plain_encoding(weighted=True),
                                       uploaders=lambda p: [c for c, _ in p.participants][1:])
    row = plain.charge(plan)
    assert row['uplink_bytes'] == 13868 and row['downlink_bytes'] == 3 * 4 * VALUES
    nobody = ledger.CommunicationLedger([VALUES], VALUES, ledger.plain_encoding(weighted=True),
                                        uploaders=lambda p: [])
    assert nobody.charge(plan)['uplink_bytes'] == 0


def test_a_side_upload_is_billed_as_a_vector_of_its_own_with_its_side_values():
    """SCAFFOLD sends the model delta and dc_i, each model-sized. Plainly: 32 bits a value (a
    uniform weight is not sent). Through secure sums: each is one packed vector of B-bit
    values plus its 3 side values, with the secure sum's 3 one-bit counts. With SecAgg: the
    two packed vectors, concatenated and masked, at M bits a value, M the bits of K x (2^B - 1)."""
    import numpy as np
    import tensorflow_federated as tff
    from fl_tff import round_hooks
    shapes = [(64, 32), (32,), (32, 32), (32,), (32, 10), (10,)]
    weights = tff.learning.models.ModelWeights([np.zeros(s, np.float32) for s in shapes], [])
    base = dict(algorithm='scaffold', hidden_units=32, clients_per_round=8,
                client_weighting='uniform')

    def per_client(**settings):
        config = ExperimentConfig(**base, **settings)
        config.validate()
        return round_hooks.build_communication_ledger(config, weights).uplink_client_bytes

    assert per_client() == 2 * 32 * VALUES // 8
    assert per_client(secure_agg=True, secure_bits=8) == -(-2 * (8 * (VALUES + 3) + 3) // 8)
    m = (8 * (2 ** 8 - 1)).bit_length()  # The largest cohort: K = 8 clients.
    assert per_client(secure_agg=True, secure_bits=8, secagg=True) == -(-m * 2 * (VALUES + 3) // 8)


@pytest.mark.parametrize('settings,expected_name', [
    (dict(secure_agg=True, secure_bits=8, secagg=True), 'secagg 11-bit'),  # bits of 8 x 255.
    (dict(secure_agg=True, secure_bits=8), 'secure 8-bit'),
    (dict(dp='distributed', secure_agg=True, secure_bits=12, client_weighting='uniform',
          client_sampling='uniform', noise_multiplier=0.5), 'distributed DP 12-bit'),
    (dict(compression='topk', compression_k=0.1), 'top-0.1'),
    ({}, 'float32'),
])
def test_the_uplink_encoding_follows_declarations_not_registry_order(settings, expected_name):
    """Which encoding a run is billed at is declared (one value encoding; SecAgg's masking
    re-encodes the secure sum's packed vector; the secure sum that distributed DP leaves out of
    its chain sends nothing of its own), so the registries' order changes nothing."""
    import numpy as np
    import tensorflow_federated as tff
    from fl_tff import config as config_lib, round_hooks
    weights = tff.learning.models.ModelWeights([np.zeros((64, 10), np.float32),
                                                np.zeros(10, np.float32)], [])
    reversed_class = config_lib.make_config_class(tuple(reversed(config_lib.REGISTRIES)),
                                                  name='ReversedConfig')
    billed = []
    for config_class in (ExperimentConfig, reversed_class):
        config = config_class(clients_per_round=8, **settings)
        config.validate()
        built = round_hooks.build_communication_ledger(config, weights)
        billed.append((built.uplink.name, built.uplink_client_bytes))
    assert billed[0] == billed[1] and billed[0][0].startswith(expected_name), billed
