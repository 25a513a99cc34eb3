"""Conditional diffusion on external data (issue 14, item 3).

Default suite: reading HDF5 data sets (shapes, one-line errors), the network's use of its
conditions (scalars through the embedding, arrays as channels: a changed condition changes the
output, the model-file round trip keeps it bitwise), the CLI's train --x --condition and sample
--condition, with a data set's theory (shape and schedules, no action). Slow: free fields at
several masses, conditioned on the mass; the generated two-point function per condition against
the exact one.
"""
import math

import h5py
import numpy as np
import pytest
import torch

from fakes import FakeTheory, ve_schedule, vp_schedule
from theoryc.runtime.errors import SamplerError
from theoryc.runtime.io.dataset import read_training_set
from theoryc.runtime.models import load_model, save_model
from theoryc.runtime.models.conditional import (ConditionalNet, sample_conditional,
                                                train_conditional)

L = 8


def free_covariance(m2, n=L):
    """(-Laplacian + m^2)^-1 on a periodic 1-d lattice: the free field's exact two-point function."""
    eye = torch.eye(n, dtype=torch.float64)
    lap = 2 * eye - torch.roll(eye, 1, 0) - torch.roll(eye, -1, 0)
    return torch.linalg.inv(lap + m2 * eye)


def free_data(masses, per_mass, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs, ms = [], []
    for m2 in masses:
        chol = torch.linalg.cholesky(free_covariance(m2))
        xs.append(torch.randn(per_mass, L, generator=g, dtype=torch.float64) @ chol.T)
        ms.append(torch.full((per_mass,), m2, dtype=torch.float64))
    return torch.cat(xs), torch.cat(ms)


def chain_theory():
    return FakeTheory(name="free_chain", action_fn=lambda p: (p**2).flatten(1).sum(1) / 2,
                      lattice=(L,), observable_fns={"phi2": lambda p: (p**2).flatten(1).mean(1)},
                      schedules={"ve": ve_schedule(10.0), "vp": vp_schedule(0.1, 20.0)})


def write_data(path, x, m2, profile=None):
    with h5py.File(path, "w") as f:
        f["spectra"] = x.numpy()
        f["m2"] = m2.numpy()
        if profile is not None:
            f["profile"] = profile.numpy()


def test_read_training_set_shapes_and_errors(tmp_path):
    x, m2 = free_data([0.5, 1.0], 10)
    write_data(tmp_path / "d.h5", x, m2, profile=torch.randn(20, L))
    configs, conds, specs = read_training_set(tmp_path / "d.h5", "spectra", ["m2", "profile"],
                                              (1, L))
    assert configs.shape == (20, 1, L)
    assert [(s.kind, s.width) for s in specs] == [("scalar", 1), ("array", 1)]
    assert conds[0].shape == (20, 1) and conds[1].shape == (20, 1, L)
    with pytest.raises(SamplerError, match="no dataset 'mass'.*m2"):
        read_training_set(tmp_path / "d.h5", "spectra", ["mass"], (1, L))
    with pytest.raises(SamplerError, match=r"shape \(8,\).*\(1, 4\)"):
        read_training_set(tmp_path / "d.h5", "spectra", [], (1, 4))
    (tmp_path / "t.h5").write_text("not hdf5")
    with pytest.raises(SamplerError, match="not an HDF5 file"):
        read_training_set(tmp_path / "t.h5", "spectra", [], (1, L))


def test_the_network_uses_its_conditions_and_the_model_file_keeps_them(tmp_path):
    """Both kinds of condition reach the output (a random, non-zero-output network), and a
    saved and reloaded model generates bitwise the same samples for the same condition."""
    theory = chain_theory()
    x, m2 = free_data([0.5, 1.0], 50)
    profile = torch.randn(100, 1, L, dtype=torch.float64)
    specs = [{"name": "m2", "kind": "scalar", "width": 1},
             {"name": "profile", "kind": "array", "width": 1}]
    net = ConditionalNet((1, L), specs, width=8, depth=1, zero_out=False)
    torch.nn.init.normal_(net.cond_gain.weight)     # it starts at 0: gain 1, unconditional
    u, t = torch.randn(3, 1, L), torch.full((3,), 0.3)
    pattern = torch.randn(1, 1, L)       # not constant: GroupNorm removes a constant channel
    outs = []
    for s, a in ((0.5, 0.0), (2.0, 0.0), (0.5, 1.0)):
        net.bind(torch.full((1, 1), s), a * pattern)
        outs.append(net(u, t, torch.log(t)))
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])
    model = train_conditional(theory, x[:, None].float(), [m2[:, None], profile], specs,
                              schedule=theory.schedules["vp"], steps=5, batch_size=16, width=8,
                              depth=1, progress=False)
    assert float(model.net.scalar_mean) == pytest.approx(0.75)
    save_model(model, tmp_path / "m.pt", theory)
    back = load_model(tmp_path / "m.pt", schedules=theory.schedules)
    conds = [torch.tensor([[0.5]]), torch.zeros(1, 1, L)]
    a = sample_conditional(model, 6, conds, solver="ode", steps=5, seed=2, progress=False)
    b = sample_conditional(back, 6, conds, solver="ode", steps=5, seed=2, progress=False)
    assert torch.equal(a.configs, b.configs)
    with pytest.raises(ValueError, match="2 condition"):
        sample_conditional(model, 6, conds[:1], progress=False)


def test_cli_conditional_train_and_sample(tmp_path):
    from click.testing import CliRunner
    from theoryc.cli import main
    x, m2 = free_data([0.5, 1.0], 100)
    write_data(tmp_path / "d.h5", x, m2)
    theory = tmp_path / "chain.theory"
    # a data set's theory: its shape and schedule, no action
    theory.write_text("theory chain\nparam N = 8\nlattice N\nfield x : real\n"
                      "observable x2 = mean(t)[ x(t)^2 ]\n"
                      "schedule vp {\n    drift = -(0.1 + 19.9*t) * x / 2\n"
                      "    diffusion = sqrt(0.1 + 19.9*t)\n}\n")
    cli = CliRunner()
    res = cli.invoke(main, ["train", str(theory), "--model", "diffusion", "--data",
                            str(tmp_path / "d.h5"), "--x", "spectra", "--condition", "m2",
                            "--steps", "5", "--batch-size", "16", "--quiet", "-o",
                            str(tmp_path / "m.pt")])
    assert res.exit_code == 0, res.output
    np.save(tmp_path / "c.npy", np.full(20, 0.7))
    for value in ("0.5", str(tmp_path / "c.npy")):
        res = cli.invoke(main, ["sample", str(theory), "--sampler", "diffusion", "--model",
                                str(tmp_path / "m.pt"), "--condition", value, "--n", "20",
                                "--steps", "5", "--quiet", "--force", "-o", str(tmp_path / "e.h5")])
        assert res.exit_code == 0, res.output
    res = cli.invoke(main, ["sample", str(theory), "--sampler", "diffusion", "--model",
                            str(tmp_path / "m.pt"), "--n", "20", "-o", str(tmp_path / "f.h5")])
    assert res.exit_code == 1 and "conditioned on m2" in res.output and "Traceback" not in res.output
    for sampler in ("hmc", "flow"):     # nothing to sample without an action
        res = cli.invoke(main, ["sample", str(theory), "--sampler", sampler, "--model",
                                str(tmp_path / "m.pt"), "-o", str(tmp_path / "g.h5")])
        assert res.exit_code == 1 and "has no action" in res.output, res.output


@pytest.mark.slow
def test_free_fields_conditioned_on_the_mass():
    """Free fields on a periodic chain of 8 sites at m^2 = 0.5, 1, 1.5, 2 (5000 configurations
    each), one model conditioned on m^2 (VP, 1000 steps). For m^2 = 0.5, 1 and the unseen 1.25,
    2000 generated configurations (probability-flow ODE, 40 steps): <phi^2> = C(0) and C(r),
    r = 1..4, each within 3 sigma (their statistical error) of the exact (-Laplacian + m^2)^-1.
    Measured pulls at most 2.2 in size (C(2..4), whose relative errors are 10-20 %); <phi^2>
    within 1-2 %."""
    theory = chain_theory()
    x, m2 = free_data([0.5, 1.0, 1.5, 2.0], 5000)
    model = train_conditional(theory, x[:, None].float(), [m2[:, None]],
                              [{"name": "m2", "kind": "scalar", "width": 1}],
                              schedule=theory.schedules["vp"], steps=1000, batch_size=512,
                              lr=5e-3, width=32, depth=2, progress=False)
    for value in (0.5, 1.0, 1.25):
        run = sample_conditional(model, 2000, [torch.tensor([[value]])], solver="ode", steps=40,
                                 seed=1, progress=False)
        y = run.configs[0, :, 0].double()
        corr = torch.stack([(y * torch.roll(y, -r, 1)).mean(1) for r in range(L // 2 + 1)], 1)
        exact = free_covariance(value)[0, : L // 2 + 1]
        pulls = (corr.mean(0) - exact) / (corr.std(0) / math.sqrt(len(y)))
        assert pulls.abs().max() < 3, (value, pulls)
