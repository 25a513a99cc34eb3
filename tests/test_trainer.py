"""The one trainer: its learning-rate schedule, its refusal to resume another run, the one
model-file format, and bitwise resume of a `theoryc train` killed (SIGKILL) at several moments."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import fakes
from theoryc.runtime.errors import SamplerError
from theoryc.runtime.io.modelfile import FORMAT_VERSION, load_model_file
from theoryc.runtime.models import load_model, save_model
from theoryc.runtime.models.diffusion import train_diffusion
from theoryc.runtime.models.trainer import TrainSettings, learning_rate
from theoryc.runtime.models.variational import train_flow

TINY_FLOW = dict(batch_size=8, n_layers=2, hidden=4, dtype=torch.float64, progress=False)


def test_learning_rate_warms_up_then_decays_by_a_cosine():
    s = TrainSettings(steps=110, batch_size=1, lr=1.0, warmup=10, lr_final_fraction=0.1)
    assert [learning_rate(i, s) for i in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert learning_rate(10, s) == pytest.approx(1.0)                    # cosine starts at lr
    assert learning_rate(60, s) == pytest.approx(0.1 + 0.9 * 0.5)        # halfway: the mean
    assert learning_rate(110, s) == pytest.approx(0.1)                   # ends at the fraction
    constant = TrainSettings(steps=50, batch_size=1, lr=0.3)
    assert {learning_rate(i, constant) for i in range(50)} == {0.3}


@pytest.mark.parametrize("change, setting", [({"lr": 2e-2}, "training.lr"),
                                             ({"seed": 4}, "training.seed"),
                                             ({"batch_size": 16}, "training.batch_size"),
                                             ({"steps": 30}, "training.steps"),
                                             ({"hidden": 5}, "architecture.hidden")])
def test_flow_resume_refuses_another_setting(tmp_path, change, setting):
    theory = fakes.phi4_lattice((4, 4), kappa=0.2, lam=0.5)
    ckpt = str(tmp_path / "flow.ckpt")
    args = dict(TINY_FLOW, steps=20, lr=1e-2, seed=3)
    train_flow(theory, stop_after=5, checkpoint=ckpt, **args)
    with pytest.raises(SamplerError, match=rf"made by a different run: {setting}=.* there, .* in this run"):
        train_flow(theory, checkpoint=ckpt, resume=True, **{**args, **change})
    train_flow(theory, checkpoint=ckpt, resume=True, **args)   # the same settings carry on


def test_resume_refuses_another_data_set_or_theory(tmp_path):
    """Forward-KL data and diffusion data are fingerprinted (sha256 of their bytes); so is the
    theory (name, source, parameters, shape)."""
    theory = fakes.phi4_lattice((4, 4), kappa=0.2, lam=0.5)
    data = torch.randn(32, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    other = data.clone()
    other[0, 0, 0, 0] += 1e-9
    ckpt = str(tmp_path / "flow.ckpt")
    args = dict(TINY_FLOW, steps=10, seed=0)
    train_flow(theory, data=data, stop_after=2, checkpoint=ckpt, **args)
    with pytest.raises(SamplerError, match="different run: data="):
        train_flow(theory, data=other, checkpoint=ckpt, resume=True, **args)
    with pytest.raises(SamplerError, match="was made for other parameters: kappa=0.2 there, 0.21 here"):
        train_flow(fakes.phi4_lattice((4, 4), kappa=0.21, lam=0.5), data=data, checkpoint=ckpt,
                   resume=True, **args)
    dg = fakes.double_gaussian_0d()
    x = torch.randn(256, 1, generator=torch.Generator().manual_seed(1))
    dckpt = str(tmp_path / "diffusion.ckpt")
    dargs = dict(schedule=dg.schedules["ve"], steps=10, batch_size=16, width=8, depth=1,
                 progress=False, checkpoint=dckpt)
    train_diffusion(dg, x, stop_after=2, **dargs)
    with pytest.raises(SamplerError, match="different run: data="):
        train_diffusion(dg, x + 1e-3, resume=True, **dargs)
    with pytest.raises(SamplerError, match="different run: training.lr="):
        train_diffusion(dg, x, resume=True, lr=1e-3, **dargs)


def test_one_model_file_format(tmp_path):
    """Flows, VANs and diffusion models share one file layout with a kind and a version; a newer
    or foreign file is a one-line error."""
    theory = fakes.phi4_lattice((4, 4), kappa=0.2, lam=0.5)
    flow = train_flow(theory, steps=3, **TINY_FLOW)
    van = train_flow(fakes.ising_2d(L=3), steps=3, batch_size=8, progress=False)
    dg = fakes.double_gaussian_0d()
    diff = train_diffusion(dg, torch.randn(64, 1), schedule=dg.schedules["ve"], steps=3,
                           batch_size=8, width=8, depth=1, progress=False)
    for model, th in ((flow, theory), (van, None), (diff, dg)):
        path = tmp_path / f"{model.kind}.pt"
        save_model(model, path, th)
        kind, payload = load_model_file(path)
        assert kind == model.kind and payload["format_version"] == FORMAT_VERSION
        assert payload["history"]["step"] == [2]             # logged at the last step
        assert load_model(path).meta["theory_name"] == (th or fakes.ising_2d(L=3)).name
    newer = torch.load(tmp_path / "flow.pt", weights_only=True)
    newer["format_version"] = FORMAT_VERSION + 1
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(SamplerError, match="newer theoryc"):
        load_model_file(tmp_path / "newer.pt")
    del newer["format_version"]                              # as files were before the format
    torch.save(newer, tmp_path / "older.pt")
    with pytest.raises(SamplerError, match="older theoryc"):
        load_model_file(tmp_path / "older.pt")
    damaged = torch.load(tmp_path / "flow.pt", weights_only=True)
    damaged["settings"] = damaged["settings"].replace('"hidden": 4', '"hidden": 5')
    torch.save(damaged, tmp_path / "damaged.pt")                 # weights of another shape
    with pytest.raises(SamplerError, match="does not hold a usable flow model"):
        load_model(tmp_path / "damaged.pt")
    damaged["settings"] = 3
    torch.save(damaged, tmp_path / "damaged.pt")
    with pytest.raises(SamplerError, match="damaged model file"):
        load_model_file(tmp_path / "damaged.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(SamplerError, match="not a model file"):
        load_model_file(tmp_path / "foreign.pt")
    with pytest.raises(SamplerError, match="holds a diffusion model; this needs a flow or van"):
        load_model(tmp_path / "diffusion.pt", kinds=("flow", "van"))


# ------------------------------------------------------------------ SIGKILL at several moments

TRAIN = ["train", "phi4_2d", "--set", "L=4", "--model", "flow", "--steps", "400", "--layers", "2",
         "--hidden", "4", "--batch-size", "16", "--dtype", "float64", "--checkpoint-every", "7",
         "--seed", "5", "--quiet"]


def _env(cache):
    return {**os.environ, "THEORYC_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def _train(out, env, *extra):
    return subprocess.Popen([sys.executable, "-m", "theoryc.cli", *TRAIN, *extra, "-o", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _state(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _timed_run(out, env):
    """(seconds until the first checkpoint appears, seconds until the run ends)."""
    start = time.perf_counter()
    proc, first = _train(out, env), None
    while proc.poll() is None:
        if first is None and os.path.exists(f"{out}.ckpt"):
            first = time.perf_counter() - start
        time.sleep(0.005)
    assert proc.returncode == 0 and first is not None
    return first, time.perf_counter() - start


def test_flow_training_killed_at_random_moments_resumes_bitwise(tmp_path):
    """SIGKILL `theoryc train` at several moments (during start-up, and at random points of the
    training measured on an uninterrupted run), then `--resume` until it finishes: the final
    weights are the same bytes as the uninterrupted run's."""
    env = _env(tmp_path / "cache")
    reference = tmp_path / "reference.pt"
    assert _train(reference, env).wait() == 0           # also compiles the theory into the cache
    first, end = _timed_run(tmp_path / "timed.pt", env)
    expected = _state(reference)
    rng = torch.Generator().manual_seed(0)
    # (wait for the first checkpoint?, then seconds): one kill during start-up, three at random
    # points of the training phase (timed from its first checkpoint: start-up times vary a lot)
    moments = [(False, 0.5 * first)] + [(True, float(u) * 0.8 * (end - first))
                                        for u in torch.rand(3, generator=rng)]
    killed_in_training = 0
    for i, (in_training, delay) in enumerate(moments):
        out = tmp_path / f"killed{i}.pt"
        for attempt in range(4):      # a run faster than the timed one may finish first: sooner
            proc = _train(out, env)
            while in_training and proc.poll() is None and not os.path.exists(f"{out}.ckpt"):
                time.sleep(0.005)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if not (in_training and out.exists()):
                break
            out.unlink()
            delay /= 2
        killed_in_training += os.path.exists(f"{out}.ckpt") and not out.exists()
        resumed = _train(out, env, "--resume")
        assert resumed.wait() == 0, resumed.stderr.read().decode()
        assert not os.path.exists(f"{out}.ckpt")
        got = _state(out)
        assert got.keys() == expected.keys()
        for k in expected:
            assert torch.equal(got[k], expected[k]), (i, k)
    assert killed_in_training >= 2, "the kills did not land inside the training"


def test_cli_resume_refuses_another_learning_rate(tmp_path):
    """A checkpoint left by an interrupted training (here through the API, stopped after 2 of 5
    steps) is continued by the CLI only with its settings: another --lr is one line naming it."""
    import theoryc
    out, ckpt = tmp_path / "m.pt", tmp_path / "m.pt.ckpt"
    trained = theoryc.train(theoryc.load("phi4_2d", L=4), "flow", steps=5, stop_after=2, n_layers=1,
                            hidden=2, progress=False, checkpoint=str(ckpt))
    assert ckpt.exists() and trained.path is None and trained.kind == "flow"
    args = ["train", "phi4_2d", "--set", "L=4", "--model", "flow", "--steps", "5", "--layers", "1",
            "--hidden", "2", "--quiet", "-o", str(out)]
    result = subprocess.run([sys.executable, "-m", "theoryc.cli", *args, "--lr", "0.01", "--resume"],
                            env=_env(tmp_path / "cache"), capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "training.lr=0.001 there, 0.01 in this run" in result.stderr
    result = subprocess.run([sys.executable, "-m", "theoryc.cli", *args, "--resume"],
                            env=_env(tmp_path / "cache"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert load_model(out).history["step"] == [4] and not ckpt.exists()


def test_api_trains_writes_and_samples_what_the_cli_does(tmp_path):
    """theoryc.train returns the model with its history and settings and writes the one model
    file; theoryc.sample draws from it with observables as arrays; options it does not have are
    one-line errors."""
    import theoryc
    th = theoryc.load("double_gaussian")
    data = torch.randn(512, 1, generator=torch.Generator().manual_seed(0))
    out = tmp_path / "dm.pt"
    trained = theoryc.train(th, "diffusion", data=data, output=out, steps=20, batch_size=32,
                            width=8, depth=1, schedule="vp", log_every=10, progress=False)
    assert trained.kind == "diffusion" and trained.path == out and not (tmp_path / "dm.pt.ckpt").exists()
    assert trained.history["step"] == [9, 19] and trained.settings["steps"] == 20
    assert load_model_file(out)[1]["schedule_name"] == "vp"
    run = theoryc.sample(th, "diffusion", model=out, n=16, steps=5, progress=False,
                         output=tmp_path / "dm.h5")
    assert run.chains_and_n == (1, 16) and set(run.observables) == set(th.observable_names)
    assert run.observables[th.observable_names[0]].shape == (1, 16)
    with pytest.raises(SamplerError, match="no option n_layers"):
        theoryc.train(th, "diffusion", data=data, steps=2, n_layers=3, progress=False)
    with pytest.raises(SamplerError, match="learns from data"):
        theoryc.train(th, "diffusion", steps=2, progress=False)
