"""Misused commands end in one line naming the problem and exit code 1, never a traceback."""
import pytest
from click.testing import CliRunner

from theoryc.cli import main


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("THEORYC_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)

    def invoke(*args):
        result = CliRunner().invoke(main, list(args))
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result
    return invoke


def garbage(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not a model, not an ensemble\n")
    return str(path)


def expect_error(result, *words):
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    for w in words:
        assert w in result.output


def test_garbage_model_file(run, tmp_path):
    model = garbage(tmp_path, "m.pt")
    expect_error(run("sample", "double_gaussian", "--sampler", "diffusion", "--model", model, "-o", "o.h5"),
                 "m.pt", "not a model file")
    expect_error(run("plot", model, "-o", "o.png"), "not a model file")


def test_garbage_ensemble_file(run, tmp_path):
    ens = garbage(tmp_path, "e.h5")
    expect_error(run("measure", ens), "e.h5", "not an ensemble file")
    expect_error(run("train", "double_gaussian", "--model", "diffusion", "--data", ens, "-o", "m.pt"),
                 "not an ensemble file")


def test_sampler_needs_a_model(run):
    expect_error(run("sample", "double_gaussian", "--sampler", "flow", "-o", "o.h5"), "--model")


def test_unknown_theory_and_bad_set(run):
    expect_error(run("compile", "phi4_2dd"), "phi4_2d")
    expect_error(run("compile", "phi4_2d", "--set", "kappa"), "NAME=VALUE")
    expect_error(run("compile", "phi4_2d", "--set", "kapa=0.3"), "kappa")


def test_diffusion_training_needs_data_and_a_schedule(run):
    expect_error(run("train", "phi4_2d", "--model", "diffusion", "-o", "m.pt"), "--data")


def test_complex_action_refused_by_hmc(run):
    expect_error(run("sample", "complex_quartic", "--sampler", "hmc", "-o", "o.h5"), "complex Langevin")
