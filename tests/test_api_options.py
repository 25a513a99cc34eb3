"""The API's option checks (theoryc/api.py refuse_unknown_options, dtype_option): an option that
no function of the chosen sampler or training takes is named in one line, before anything runs;
a dtype given by name becomes torch's."""
from __future__ import annotations

import pytest
import torch

import fakes
import theoryc
from theoryc.api import dtype_option
from theoryc.runtime.errors import SamplerError


@pytest.mark.parametrize("sampler, call", [
    ("hmc", lambda th: theoryc.sample(th, "hmc", n=2, chains=1, bogus=1, other=2)),
    ("flow", lambda th: theoryc.sample(th, "flow", n=2, bogus=1, other=2)),
    ("training", lambda th: theoryc.train(th, "flow", steps=1, bogus=1, other=2)),
])
def test_unknown_options_are_named(sampler, call):
    th = fakes.phi4_lattice((4, 4), kappa=0.2)
    what = "flow training" if sampler == "training" else f"sampler {sampler}"
    with pytest.raises(SamplerError, match=f"^{what} has no option bogus, other$"):
        call(th)


def test_complex_langevin_options_need_a_complex_action_and_dtype_names_are_read():
    th = fakes.phi4_lattice((4, 4), kappa=0.2)
    with pytest.raises(SamplerError, match="sampler langevin has no option noise_imag"):
        theoryc.sample(th, "langevin", n=2, chains=1, noise_imag=0.1)   # a real action: refused
    options = {"dtype": "float32"}
    dtype_option(options)
    assert options == {"dtype": torch.float32}
