"""The one chain driver: a new sampler is a kernel, thinning/storage options, the streamed file's
layout, and what a checkpoint holds."""
from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

import fakes
import theoryc
from theoryc.runtime.chains.adaptation import Fixed
from theoryc.runtime.chains.driver import Output, Plan, run_chains
from theoryc.runtime.chains.hmc import run_hmc
from theoryc.runtime.io.checkpoint import load_checkpoint
from theoryc.runtime.io.ensemble import read_ensemble


class RandomWalk:
    """Random-walk Metropolis with a Gaussian proposal of width params["step"]: the whole kernel
    a new sampler needs (init, step and the driver's hooks); no loop of its own."""

    def __init__(self, theory):
        self.theory = theory

    def init(self, phi, generator):
        return (phi, self.theory.action(phi).double())

    def step(self, state, generator, params):
        phi, s = state
        prop = phi + params["step"] * torch.randn(phi.shape, generator=generator, dtype=phi.dtype)
        s_prop = self.theory.action(prop).double()
        ok = torch.rand(s.shape, generator=generator, dtype=torch.float64).log() < s - s_prop
        mask = ok.view(-1, *([1] * (phi.dim() - 1)))
        return (torch.where(mask, prop, phi), torch.where(ok, s_prop, s)), {"accept": ok}

    def fields(self, state):
        return state[0]

    def transform(self, state, fn):
        return self.init(fn(state[0]), None)

    def record(self, state, info, params):
        return {"accept": info["accept"]}

    def summary(self, stats, params, settings):
        return {"acceptance": float(stats["accept"].mean())}

    def final_settings(self, params):
        return {}

    def timing(self, seconds, stats, plan):
        return {"seconds": seconds}

    def state_dict(self, state):
        return {"phi": state[0], "action": state[1]}

    def load_state(self, d, device):
        return (d["phi"], d["action"])


def test_a_new_sampler_is_a_kernel():
    """Random-walk Metropolis on the double Gaussian through the driver, with its symmetry move:
    <x^2> = mu0^2 + s0^2 = 1.0625 (both modes: the move mixes them)."""
    theory = fakes.double_gaussian_0d(mu0=1.0, s0=0.25)
    plan = Plan(n=4000, chains=16, warmup=200, every=2, seed=1)
    run = run_chains(RandomWalk(theory), lambda g: torch.randn((16, 1), generator=g,
                                                                dtype=torch.float64),
                     plan, Fixed(step=0.5), {"sampler": "random_walk"},
                     symmetries=theory.symmetries, progress=False)
    x2 = (run.configs[..., 0].numpy() ** 2).mean(1)
    m, e = x2.mean(), x2.std(ddof=1) / math.sqrt(len(x2))
    assert abs(m - 1.0625) < 4 * e, (m, e)
    assert 0.2 < run.summary["acceptance"] < 0.9 and run.settings["every"] == 2



def test_a_warm_up_adaptation_is_handed_only_what_it_reads():
    """The driver passes an adaptation the info entries its `reads` names (under torchrun it
    gathers only those over the ranks): a tuner of `accept` never sees the kernel's `dH`, and
    one that reads nothing (Fixed) gets nothing."""
    from theoryc.runtime.chains.adaptation import DualAveraging

    class Recording(DualAveraging):
        seen: list = []

        def update(self, s, info):
            self.seen.append(sorted(info))
            return super().update(s, info)

    class WithMoreInfo(RandomWalk):
        def step(self, state, generator, params):
            state, info = super().step(state, generator, params)
            return state, {"accept": info["accept"].double(), "dH": torch.zeros(4)}

    assert Fixed.reads == () and DualAveraging.reads == ("accept",)
    theory = fakes.double_gaussian_0d(mu0=1.0, s0=0.25)
    start = lambda g: torch.randn((4, 1), generator=g, dtype=torch.float64)
    adaptation = Recording(0.5, 0.6)
    run = run_chains(WithMoreInfo(theory), start, Plan(n=5, chains=4, warmup=7, seed=1),
                     adaptation, {"sampler": "random_walk"}, progress=False)
    assert adaptation.seen == [["accept"]] * 7 and run.configs.shape == (4, 5, 1)

def test_save_every_and_no_configs_store_a_subset_of_the_same_chain(tmp_path):
    """Thinning the stored configurations changes nothing else: the stored ones are every K-th
    of the full run, bit for bit, and observables/stats are those of the full run."""
    theory = fakes.phi4_lattice((4, 4), kappa=0.2, lam=0.02)
    kw = dict(n=50, chains=3, warmup=20, seed=2, progress=False, checkpoint_every=12)
    full = theoryc.sample(theory, "hmc", **kw)
    thin = theoryc.sample(theory, "hmc", save_every=5, output=tmp_path / "thin.h5", **kw)
    bare = theoryc.sample(theory, "hmc", configs=False, output=tmp_path / "bare.h5", **kw)
    ens = read_ensemble(tmp_path / "thin.h5")
    assert ens.save_every == 5 and ens.configs.shape == (3, 10, 1, 4, 4)
    assert np.array_equal(ens.configs, full.configs[:, 4::5].numpy())
    for name, v in full.observables.items():
        assert np.array_equal(ens.observables[name], v) and np.array_equal(bare.observables[name], v)
    for name, v in full.stats.items():
        assert np.array_equal(ens.stats[name], v), name
    with h5py.File(tmp_path / "bare.h5") as f:
        assert "configs" not in f and f["observables/M"].shape == (3, 50)
    with pytest.raises(ValueError, match="no-configs"):
        read_ensemble(tmp_path / "bare.h5")
    assert read_ensemble(tmp_path / "bare.h5", configs=False).observables.keys() == full.observables.keys()


def test_streamed_file_layout_and_attributes(tmp_path):
    theory = fakes.phi4_lattice((4, 4), kappa=0.2)
    out = tmp_path / "e.h5"
    run = theoryc.sample(theory, "hmc", n=30, chains=2, warmup=10, seed=4, output=out,
                         progress=False)
    assert run.configs is None and run.path == out and run.chains_and_n == (2, 30)
    assert not (tmp_path / "e.h5.tmp").exists() and not (tmp_path / "e.h5.ckpt").exists()
    with h5py.File(out) as f:
        assert set(f) == {"configs", "observables", "stats"}
        assert f["configs"].shape == (2, 30, 1, 4, 4) and f["configs"].chunks[:2] == (1, 30)
        assert set(f["stats"]) == {"accept", "accepted", "dH", "step_size", "n_steps"}
    ens = read_ensemble(out)
    assert ens.attrs["sampler"] == "hmc" and ens.attrs["seed"] == 4 and ens.kind == "markov"
    assert ens.summary == run.summary and ens.settings == run.settings
    assert ens.attrs["timing"]["seconds"] >= 0 and "seconds_per_trajectory" not in ens.summary


def test_a_checkpoint_holds_the_sampler_state_not_the_data(tmp_path, monkeypatch):
    from theoryc.runtime.chains import hmc
    theory = fakes.phi4_lattice((4, 4), kappa=0.2)
    path = tmp_path / "run.ckpt"

    class Stop(Exception):
        pass
    real, calls = hmc.HMCKernel.step, {"n": 0}

    def step(*args):
        calls["n"] += 1
        if calls["n"] > 150:                   # killed in trajectory 151
            raise Stop
        return real(*args)
    monkeypatch.setattr(hmc.HMCKernel, "step", step)
    with pytest.raises(Stop):
        run_hmc(theory, n=200, chains=2, warmup=10, step_size=0.2, checkpoint=path,
                checkpoint_every=50, progress=False)
    snap = load_checkpoint(path)
    assert snap["written"] == 100 and snap["t"] == 10 + 100
    tensors = [k for k, v in snap["state"].items() if isinstance(v, torch.Tensor)]
    assert sorted(tensors) == ["action", "count", "force", "phi"]
    assert int(snap["state"]["count"]) == snap["t"]          # trajectories run: it draws their lengths
    assert all(snap["state"][k].shape[0] == 2 for k in ("action", "force", "phi"))
    assert "configs" not in snap and "stats" not in snap


def test_independent_metropolis_over_a_flow_resumes_bitwise(tmp_path, monkeypatch):
    """IMH over a model's proposals is a kernel too (runtime/chains/independent.py): killed
    mid-run (mid-batch of proposals) and resumed, it gives the same chain."""
    from theoryc.runtime.chains import independent
    from theoryc.runtime.models.flow import build_flow
    from theoryc.runtime.models.sampling import sample_flow
    theory = fakes.gaussian_0d(mass2=2.0)
    flow = build_flow((1,), dtype=torch.float64)
    kw = dict(seed=3, progress=False, chains=2, batch_size=64)
    full = sample_flow(theory, flow, 500, **kw)
    real, calls = independent.IndependentKernel.step, {"n": 0}

    class Stop(Exception):
        pass

    def step(*args):
        calls["n"] += 1
        if calls["n"] > 330:
            raise Stop
        return real(*args)
    monkeypatch.setattr(independent.IndependentKernel, "step", step)
    with pytest.raises(Stop):
        sample_flow(theory, flow, 500, checkpoint=tmp_path / "f.ckpt", **kw)
    monkeypatch.setattr(independent.IndependentKernel, "step", real)
    resumed = sample_flow(theory, flow, 500, checkpoint=tmp_path / "f.ckpt", resume=True, **kw)
    assert torch.equal(full.configs, resumed.configs) and full.configs.shape == (2, 500, 1)
    for name, v in full.stats.items():
        assert np.array_equal(resumed.stats[name], v), name
    assert full.summary == resumed.summary and full.summary["n_proposals"] == 1000


def test_sample_resume_reads_the_checkpoint_once_and_a_finished_file_once(tmp_path, monkeypatch):
    """theoryc.sample --resume checks the checkpoint's theory and hands the checkpoint it read to
    the driver (one read, not two); a finished output is read back once to check it and to
    return it. The resumed run is bitwise the uninterrupted one."""
    from theoryc.runtime.chains import langevin
    from theoryc.runtime.io import checkpoint as ck
    theory = fakes.phi4_lattice((4, 4), kappa=0.2)
    kw = dict(n=60, chains=2, warmup=10, seed=5, progress=False, checkpoint_every=20,
              scheme="em")
    full = theoryc.sample(theory, "langevin", **kw)
    out = tmp_path / "r.h5"
    real_step, calls = langevin.EulerMaruyama.step, {"n": 0}

    class Stop(Exception):
        pass

    def step(*args):
        calls["n"] += 1
        if calls["n"] > 45:                 # killed after the checkpoint at 20 kept configurations
            raise Stop
        return real_step(*args)
    monkeypatch.setattr(langevin.EulerMaruyama, "step", step)
    with pytest.raises(Stop):
        theoryc.sample(theory, "langevin", output=out, **kw)
    monkeypatch.setattr(langevin.EulerMaruyama, "step", real_step)
    reads, real_load = [], ck.load_checkpoint
    monkeypatch.setattr(ck, "load_checkpoint", lambda path: reads.append(path) or real_load(path))
    theoryc.sample(theory, "langevin", output=out, resume=True, **kw)
    assert [str(p) for p in reads] == [str(tmp_path / "r.h5.ckpt")]
    ens = read_ensemble(out)
    assert np.array_equal(ens.configs, full.configs.numpy())
    opened, real_open = [], theoryc.api.open_ensemble
    monkeypatch.setattr(theoryc.api, "open_ensemble",
                        lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    again = theoryc.sample(theory, "langevin", output=out, resume=True, **kw)
    assert again.already_complete and [str(p) for p in opened] == [str(out)] and again.summary == ens.summary
