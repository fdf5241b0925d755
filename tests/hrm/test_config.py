import pytest

from hrm.config import FLAVOURS, ModelConfig, flatten, from_dict, model_config


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_every_flavour_builds(flavour):
    assert isinstance(model_config(flavour), ModelConfig)


def test_paper_defaults():
    c = model_config("paper")
    assert (c.hidden_size, c.num_heads, c.h_layers, c.l_layers, c.h_cycles, c.l_cycles, c.halt_max_steps) == \
        (512, 8, 4, 4, 2, 2, 16)
    assert c.halt_exploration_prob == 0.1 and c.prefix_len == 1


@pytest.mark.parametrize("data, message", [
    ({"hidden_sise": 3}, "unknown key(s) ['hidden_sise']"),
    ({"hidden_size": "big"}, "model.hidden_size: expected an integer, got str 'big'"),
    ({"h_cycles": 2.5}, "model.h_cycles: expected an integer"),
    ({"variant": "xrm"}, "model.variant: must be one of ['hrm', 'trm']"),
    ({"hidden_size": 100, "num_heads": 8}, "not divisible by num_heads"),
    ({"mlp_t": True}, "mlp_t is a TRM option"),
])
def test_bad_config_is_named(data, message):
    with pytest.raises((ValueError, TypeError)) as err:
        from_dict(ModelConfig, data, where="model")
    assert message in str(err.value)


def test_ints_are_accepted_as_floats_and_flatten():
    c = from_dict(ModelConfig, {"expansion": 2, "puzzle_emb_dim": None})
    assert c.expansion == 2.0 and isinstance(c.expansion, float)
    assert flatten({"a": {"b": 1}, "c": 2}) == {"a.b": 1, "c": 2}


def test_unknown_flavour():
    with pytest.raises(ValueError, match="unknown model flavour 'huge'"):
        model_config("huge")
