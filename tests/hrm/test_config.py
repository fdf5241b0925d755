import pytest

from hrm.config import FLAVOURS, ModelConfig, model_config
from pipeline.core.config_io import flatten, from_dict


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
    ({"hidden_size": "big"}, "model: hidden_size: expected an integer, got str 'big'"),
    ({"h_cycles": 2.5}, "model: h_cycles: expected an integer, got float 2.5"),
    ({"hidden_size": True}, "model: hidden_size: expected an integer, got bool True"),
    ({"mlp_t": 1}, "model: mlp_t: expected bool, got int 1"),
    ({"variant": "xrm"}, "model: variant: must be one of ['hrm', 'trm'], got 'xrm'"),
    ({"q_target": "later"}, "model: q_target: must be one of ['extra_segment', 'lagged', 'none'], got 'later'"),
    ({"hidden_size": 100, "num_heads": 8}, "model: invalid model config: hidden_size 100 is not divisible by num_"),
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


def test_model_config_is_plain_python():
    """hrm.config needs neither the pipeline nor pydantic: strict loading of files is pipeline.core.config_io's."""
    import subprocess
    import sys

    code = ("import sys, hrm.config; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pipeline', 'pydantic')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert model_config("debug", expansion=3.0, vocab_size=8).expansion == 3.0
    with pytest.raises(TypeError, match="h_cycle"):
        model_config("debug", h_cycle=2)
