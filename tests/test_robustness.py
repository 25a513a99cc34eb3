"""Issue 15: a run never mislabels, mixes or silently loses data; the command line tells the truth.

One test per failure the issue lists, each through a real process of the command line: a child
forked from this (warm) test process runs `theoryc.cli.main` with its own argv, stdout, stderr,
signal handlers and exit status, as `theoryc ...` would, without paying the 2 s import of a fresh
interpreter each time (so that the ~60 commands below fit in seconds). The fault-injection test
(SIGKILL / SIGTERM at random moments, then --resume) is marked slow.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

TINY = ("--sampler", "hmc", "--chains", "2", "--warmup", "10", "--set", "L=4", "--quiet")
LONG = ("--n", "200000")          # a run that is interrupted long before its end


class Evil:
    """A class: torch.save pickles it by reference, which weights_only loading must refuse."""


class Done:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    @property
    def text(self):
        return self.out + self.err

    def one_line_error(self, *words):
        """Exit 1, no traceback, one 'Error' line naming `words`."""
        assert self.rc == 1, self.text
        assert "Traceback" not in self.text, self.text
        errors = [line for line in self.err.splitlines() if line.startswith("Error")]
        assert len(errors) == 1, self.text
        for w in words:
            assert w in errors[0], self.text
        return errors[0]


def theoryc(cwd, *args, kill_after=None, sig=signal.SIGKILL, wait_for=None, timeout=120) -> Done:
    """Run `theoryc ARGS` in a forked child (cwd, umask 022). kill_after: send `sig` that many
    seconds after `wait_for` (a path) exists, or after the start."""
    from theoryc.cli import main
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:                                  # the child: the command line, nothing else
        code = 1
        try:
            os.chdir(cwd)
            os.umask(0o022)
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            main([str(a) for a in args], prog_name="theoryc")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:                     # noqa: BLE001 (reported as a traceback)
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    start = time.monotonic()
    killed = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        now = time.monotonic()
        if wait_for is not None and not Path(wait_for).exists():
            start = now
        elif kill_after is not None and not killed and now - start > kill_after:
            os.kill(pid, sig)
            killed = True
        if now - start > timeout:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.002)
    rc = os.waitstatus_to_exitcode(status)
    texts = []
    for fh in (out, err):
        fh.seek(0)
        texts.append(fh.read().decode("utf-8", errors="replace"))
        fh.close()
    return Done(rc, *texts)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A folder with a theory cache (and files made once for several tests)."""
    folder = tmp_path_factory.mktemp("robust")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THEORYC_CACHE", str(folder / "cache"))
        mp.setenv("OMP_NUM_THREADS", "1")
        yield folder


@pytest.fixture(scope="module")
def made(home):
    """A finished 4x4 HMC ensemble, a 4x4 flow and the ensemble of a checkpointed run."""
    assert theoryc(home, "sample", "phi4_2d", *TINY, "--n", "40", "-o", "e4.h5").rc == 0
    assert theoryc(home, "train", "phi4_2d", "--model", "flow", "--steps", "10", "--set", "L=4",
                   "--quiet", "-o", "f4.pt").rc == 0
    return home


def fresh(home, name):
    for p in home.glob(f"{name}*"):
        p.unlink()
    for p in home.glob(f".{name}*"):
        p.unlink()
    return name


def interrupted(home, name, *extra, sig=signal.SIGTERM):
    """A run of `name` stopped by `sig` once its first production checkpoint exists."""
    fresh(home, name)
    done = theoryc(home, "sample", "phi4_2d", *TINY, *LONG, *extra, "-o", name,
                   wait_for=home / f"{name}.tmp", kill_after=0.05, sig=sig)
    assert (home / f"{name}.ckpt").exists(), done.text
    return done


# ----------------------------------------------------------------- 1. resume with other --set
@pytest.mark.slow
def test_resume_with_other_parameters_is_refused(made):
    """Was: the run continued and the file said it was the second theory."""
    interrupted(made, "r.h5")
    done = theoryc(made, "sample", "phi4_2d", *TINY, *LONG, "--set", "kappa=0.25", "--resume",
                   "-o", "r.h5")
    done.one_line_error("r.h5.ckpt", "kappa=0.21 there, 0.25 here")
    done = theoryc(made, "sample", "phi4_2d", *TINY, *LONG, "--set", "L=6", "--resume", "-o", "r.h5")
    done.one_line_error("lattice 4 x 4; this theory is 6 x 6", "--set L=4")


# --------------------------------------------------- 2. models and data of another lattice/theory
@pytest.mark.slow
def test_model_of_another_lattice_or_parameters(made):
    """Was: an 8x8 model sampled a 16x16 theory and wrote an 8x8 ensemble labelled L = 16."""
    theoryc(made, "sample", "phi4_2d", "--sampler", "flow", "--model", "f4.pt", "--n", "10",
            "--set", "L=8", "--quiet", "-o", fresh(made, "m8.h5")).one_line_error(
        "f4.pt was trained for lattice 4 x 4; this theory is 8 x 8 (use --set L=4, or retrain)")
    assert not (made / "m8.h5").exists()
    theoryc(made, "sample", "ising_2d", "--sampler", "flow", "--model", "f4.pt", "--n", "10",
            "--quiet", "-o", fresh(made, "mi.h5")).one_line_error("f4.pt", "phi4_2d")
    # at other parameters: exact through independent Metropolis, and it says so
    done = theoryc(made, "sample", "phi4_2d", "--sampler", "flow", "--model", "f4.pt", "--n", "10",
                   "--set", "L=4", "--set", "kappa=0.25", "--quiet", "-o", fresh(made, "mk.h5"))
    assert done.rc == 0 and "trained at other parameters" in done.err, done.text
    assert "warning: the model was trained at other parameters" in done.err, done.text  # after the run
    summary = json.loads(theoryc(made, "measure", "mk.h5", "--json").out)
    assert any("trained at other parameters" in w for w in summary["warnings"])


@pytest.mark.slow
def test_training_data_of_another_theory_or_lattice(made):
    """Was: accepted without a word, or a RuntimeError traceback from a reshape."""
    train = ("train", "phi4_2d", "--model", "diffusion", "--data", "e4.h5", "--steps", "5",
             "--quiet")
    theoryc(made, *train, "--set", "L=8", "-o", fresh(made, "d8.pt")).one_line_error(
        "e4.h5 was sampled for lattice 4 x 4; this theory is 8 x 8")
    theoryc(made, *train, "--set", "L=4", "--set", "kappa=0.3", "-o", fresh(made, "dk.pt")
            ).one_line_error("e4.h5", "kappa")
    theoryc(made, "train", "ising_2d", "--model", "diffusion", "--data", "e4.h5", "--steps", "5",
            "--quiet", "-o", fresh(made, "di.pt")).one_line_error("e4.h5", "phi4_2d")


# ------------------------------------------------------------------------ 3. outputs, --force
def test_existing_output_is_kept_without_force(made):
    """Was: replaced without a warning, also by another theory's ensemble."""
    before = (made / "e4.h5").read_bytes()
    theoryc(made, "sample", "ising_2d", "--sampler", "metropolis", "--n", "5", "--chains", "1",
            "--quiet", "-o", "e4.h5").one_line_error("e4.h5 exists", "--force")
    assert (made / "e4.h5").read_bytes() == before
    fresh(made, "w.h5")
    assert theoryc(made, "sample", "phi4_2d", *TINY, "--n", "5", "-o", "w.h5").rc == 0
    assert theoryc(made, "sample", "phi4_2d", *TINY, "--n", "6", "-o", "w.h5", "--force").rc == 0
    assert h5py.File(made / "w.h5")["observables/M"].shape == (2, 6)


def test_files_get_the_users_umask(made):
    """Was: ensembles and energy models written 0600 under umask 022."""
    for name in ("e4.h5", "f4.pt"):
        assert (made / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.slow
def test_plot_output_names_the_file_written(made):
    """Was: `plot A B -o figure.png` wrote figure_A.png and figure_B.png; a.h5 a.h5 twice."""
    import shutil
    shutil.copyfile(made / "e4.h5", made / "b4.h5")
    theoryc(made, "plot", "e4.h5", "b4.h5", "-o", "figure.png").one_line_error("{name}")
    assert not list(made.glob("figure*"))
    done = theoryc(made, "plot", "e4.h5", "e4.h5", "-o", "two.png")
    assert done.rc == 0 and (made / "two.png").exists() and not list(made.glob("two_*")), done.text
    done = theoryc(made, "plot", "e4.h5", "b4.h5", "-o", "fig_{name}.png")
    assert done.rc == 0 and (made / "fig_e4.png").exists() and (made / "fig_b4.png").exists()


# ---------------------------------------------------------------------- 4. interrupted runs
def test_sigterm_checkpoints_and_says_how_to_resume(made):
    """Was: status 143 and no message; measure called the checkpoint 'file signature not found'."""
    done = interrupted(made, "t.h5")
    assert done.rc == 143 and "--resume" in done.err and "t.h5.ckpt" in done.err, done.text
    assert not (made / "t.h5").exists()               # nothing claims to be complete
    for args in (("measure", "t.h5.ckpt", "--json"), ("measure", "--partial", "t.h5", "--json")):
        part = theoryc(made, *args)
        assert part.rc == 0, part.text
        s = json.loads(part.out)
        assert s["run"]["partial"] and s["run"]["configurations"] > 0
        assert any("partial" in w for w in s["warnings"])
    theoryc(made, "measure", "t.h5").one_line_error("no such ensemble file", "--partial")


def test_resume_without_checkpoint_and_after_the_end(made):
    """Was: --resume with no checkpoint silently started afresh; after a finished run reran it."""
    fresh(made, "n.h5")
    done = theoryc(made, "sample", "phi4_2d", *TINY, "--n", "5", "--resume", "-o", "n.h5")
    assert done.rc == 0 and "no checkpoint n.h5.ckpt" in done.err, done.text
    before = (made / "n.h5").stat().st_mtime_ns
    done = theoryc(made, "sample", "phi4_2d", *TINY, "--n", "5", "--resume", "-o", "n.h5")
    assert done.rc == 0 and "already complete" in done.err, done.text
    assert (made / "n.h5").stat().st_mtime_ns == before


def test_stale_checkpoint_temporaries_are_removed(made):
    """Was: a SIGKILL during a checkpoint write left .OUT.ckpt.XXXX.tmp forever."""
    interrupted(made, "k.h5", sig=signal.SIGKILL)
    stale = made / ".k.h5.ckpt.abcd1234.tmp"
    stale.write_bytes(b"x" * 1000)
    done = theoryc(made, "sample", "phi4_2d", *TINY, "--n", "150", "--resume", "-o", "k.h5")
    # the checkpoint's settings say n=200000: resuming with another n is refused, in one line
    done.one_line_error("k.h5.ckpt", "n=200000")
    interrupted(made, "k2.h5", sig=signal.SIGKILL)
    stale = made / ".k2.h5.ckpt.abcd1234.tmp"
    stale.write_bytes(b"x" * 1000)
    done = theoryc(made, "sample", "phi4_2d", *TINY, *LONG, "--resume", "-o", "k2.h5",
                   kill_after=1.0, sig=signal.SIGTERM)
    assert done.rc == 143, done.text
    assert not stale.exists()


def test_full_disk_is_one_line(made):
    """Was: a RuntimeError traceback. A file-size limit stands in for a full disk."""
    import resource
    fresh(made, "big.h5")
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
    try:
        done = theoryc(made, "sample", "phi4_2d", *TINY, "--n", "400", "-o", "big.h5")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    done.one_line_error()
    assert not (made / "big.h5").exists()


# ------------------------------------------------------------------------- 5. malformed files
def plant(made, name, **attrs):
    import shutil
    shutil.copyfile(made / "e4.h5", made / name)
    with h5py.File(made / name, "r+") as f:
        for k, v in attrs.items():
            if k.startswith("/"):
                del f[k[1:]]
                f[k[1:]] = v
            else:
                f.attrs[k] = v
    return name


@pytest.mark.slow
def test_malformed_files_are_one_line_errors(made):
    """Was a traceback in ~40 of 222 hostile files: TypeError, AttributeError, KeyError,
    RecursionError, MemoryError, IndexError."""
    ensembles = {
        "list.h5": dict(params="[1, 2]"),
        "complex3.h5": dict(params=json.dumps({"kappa": [1, 2, 3]})),
        "deep.h5": dict(theory_source="theory t\nfield phi : real\naction = " + "(" * 50000 + "phi"),
        "obs3d.h5": {"/observables/M": np.zeros((2, 40, 3, 3))},
        "kind.h5": dict(kind="ensemble"),
    }
    for name, attrs in ensembles.items():
        plant(made, name, **attrs)
        for args in (("measure", name, "--json"), ("plot", name, "-o", f"{name}.png")):
            done = theoryc(made, *args)
            if name == "deep.h5":     # the compiler's located message about the stored source
                assert done.rc == 1 and "Traceback" not in done.text and len(done.err) < 2000
                continue
            done.one_line_error(name)
    h5py.File(made / "empty.h5", "w").close()
    theoryc(made, "measure", "empty.h5").one_line_error("empty.h5", "holds no")
    # model files: another kind's payload, missing keys, a pickled object
    torch.save({"kind": "flow", "format_version": 1}, made / "nokeys.pt")
    torch.save({"checkpoint_format": 1, "kind": "training"}, made / "ck.pt")
    torch.save({"kind": "flow", "format_version": 1, "x": Evil()}, made / "pickled.pt")
    for name, words in (("nokeys.pt", ("damaged",)), ("ck.pt", ("not a model file",)),
                        ("pickled.pt", ("code-like content", "not loaded"))):
        theoryc(made, "sample", "phi4_2d", "--sampler", "flow", "--model", name, "--set", "L=4",
                "--n", "5", "-o", fresh(made, "o.h5")).one_line_error(name, *words)
    interrupted(made, "p.h5", sig=signal.SIGKILL)
    torch.save({"checkpoint_format": 1, "x": Evil()}, made / "p.h5.ckpt")
    theoryc(made, "sample", "phi4_2d", *TINY, *LONG, "--resume", "-o", "p.h5").one_line_error(
        "p.h5.ckpt", "code-like content")


# ------------------------------------------------------------------ 6. settings and stalls
@pytest.mark.parametrize("args, words", [
    (("--step", "1e-12"), ("--step",)), (("--step", "inf"), ("--step",)),
    (("--target-accept", "1.5"), ("--target-accept",)), (("--target-accept", "0"), ("--target-accept",)),
    (("--chains", "300000000"), ("GiB",)), (("--set", "lambda=-1", "--warmup", "100"), ("collapsed",)),
])
def test_nonsense_settings_stop_with_a_message(made, args, words):
    """Was: a run that never ends (step 1e-12, target 1.5, lambda = -1), garbage with exit 0,
    or an allocator traceback."""
    started = time.monotonic()
    theoryc(made, "sample", "phi4_2d", *TINY, "--n", "20", *args, "-o", fresh(made, "x.h5"),
            timeout=60).one_line_error(*words)
    assert time.monotonic() - started < 60
    assert not (made / "x.h5").exists()


def test_langevin_step_zero_and_help(made):
    theoryc(made, "sample", "phi4_2d", "--sampler", "langevin", "--step", "0", "--set", "L=4",
            "--n", "5", "-o", fresh(made, "l.h5")).one_line_error("--step")
    assert "rk2 for complex Langevin" in " ".join(theoryc(made, "sample", "--help").out.split())


def test_measure_json_is_json_and_in_declaration_order(made):
    """Was: NaN in --json (not JSON); observables listed alphabetically."""
    plant(made, "nan.h5", **{"/observables/G1": np.full((2, 40), np.nan)})
    out = theoryc(made, "measure", "nan.h5", "--json").out
    s = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in --json"))
    assert list(s["observables"])[:5] == ["M", "phi2", "C", "G0", "G1"]    # as phi4_2d declares
    assert s["run"]["theory"] == "phi4_2d" and s["run"]["chains"] == 2
    assert s["run"]["configurations"] == 40 and s["run"]["sampler"] == "hmc"


def test_measure_discard_bin_and_cumulants_of(made):
    from theoryc import api
    full = api.measure(str(made / "e4.h5")).summary
    cut = json.loads(theoryc(made, "measure", "e4.h5", "--json", "--discard", "10", "--bin", "5",
                             "--cumulants", "4", "--of", "M").out)
    assert cut["run"]["configurations"] == 30 and cut["run"]["bin"] == 5
    assert list(cut["cumulants"]) == ["M"]
    ens = api.open_ensemble(made / "e4.h5")
    m = ens.observables["M"][:, 10:]
    # the mean of bins of whole configurations is the mean of the configurations, exactly
    assert cut["observables"]["M"]["mean"] == pytest.approx(m.mean(), rel=1e-12, abs=1e-15)
    assert full["observables"]["M"]["mean"] == pytest.approx(ens.observables["M"].mean(),
                                                              rel=1e-12, abs=1e-15)
    # cost per independent sample: seconds per configuration x 2 tau_int
    per = full["run"]["seconds_per_configuration"]
    assert per == pytest.approx(ens.attrs["timing"]["seconds"] / 80)
    r = full["observables"]["phi2"]
    assert r["seconds_per_independent"] == pytest.approx(per * 2 * r["tau_int"])
    theoryc(made, "measure", "e4.h5", "--of", "M").one_line_error("--cumulants")
    theoryc(made, "measure", "e4.h5", "--cumulants", "4", "--of", "nope").one_line_error("nope")


def test_measure_of_a_run_in_memory_has_the_estimates():
    """Was: theoryc.measure(run) needed theory= for the estimates."""
    import theoryc as api
    run = api.sample(api.load("phi4_2d", L=4), "hmc", n=30, chains=2, warmup=10, progress=False)
    summary = api.measure(run).summary
    assert "chi2" in summary["estimates"] and summary["run"]["theory"] == "phi4_2d"


# ------------------------------------------------------------------------ fault injection
FAULT_RUNS = {
    "hmc": ("sample", "phi4_2d", *TINY, "--n", "300", "--seed", "3"),
    "langevin": ("sample", "phi4_2d", "--sampler", "langevin", "--chains", "2", "--warmup", "20",
                 "--set", "L=4", "--quiet", "--n", "300", "--every", "2", "--seed", "4"),
    "flow": ("train", "phi4_2d", "--model", "flow", "--set", "L=4", "--steps", "30",
             "--layers", "2", "--hidden", "8", "--batch-size", "16", "--checkpoint-every", "4",
             "--quiet", "--seed", "5"),
    "diffusion": ("train", "phi4_2d", "--model", "diffusion", "--data", "e4.h5", "--set", "L=4",
                  "--steps", "30", "--batch-size", "16", "--checkpoint-every", "4", "--quiet",
                  "--seed", "6"),
}
TIMING_KEYS = ("seconds", "train_seconds", "samples_per_second")


def contents(path: Path) -> dict:
    """What must be identical between an interrupted-and-resumed run and an uninterrupted one:
    every dataset and attribute of an ensemble but `created`/`timing`; every tensor and setting
    of a model file and its history but the wall-clock figures."""
    if path.suffix == ".h5":
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, d: out.__setitem__(name, d[()].tobytes())
                         if isinstance(d, h5py.Dataset) else None)
            out.update({f"@{k}": str(v) for k, v in f.attrs.items() if k not in ("created", "timing")})
        return out
    payload = torch.load(path, weights_only=True)
    out = {f"w/{k}": v.numpy().tobytes() for k, v in payload.pop("state_dict").items()}
    history = payload.pop("history")
    out["history"] = json.dumps({k: v for k, v in history.items() if k not in TIMING_KEYS},
                                sort_keys=True)
    out.update({k: v.numpy().tobytes() if isinstance(v, torch.Tensor) else repr(v)
                for k, v in payload.items()})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(FAULT_RUNS))
def test_kills_at_random_moments_then_resume_give_the_uninterrupted_file(made, kind):
    """SIGKILL and SIGTERM at random moments until 10 have landed (start-up, warm-up, production, checkpoint
    writes, the final rename), every run after the first with --resume; after each kill, no file
    claims to be complete unless it is (then it is the uninterrupted run's, bit for bit); the
    final --resume ends with exactly the uninterrupted run's file."""
    args = FAULT_RUNS[kind]
    suffix = ".h5" if args[0] == "sample" else ".pt"
    ref, out = f"ref_{kind}{suffix}", f"out_{kind}{suffix}"
    fresh(made, ref)
    started = time.monotonic()
    assert theoryc(made, *args, "-o", ref).rc == 0
    span = time.monotonic() - started
    expected = contents(made / ref)
    rng = np.random.default_rng(sum(map(ord, kind)))
    fresh(made, out)
    # A resumed run is shorter than the uninterrupted one, so a moment drawn over the whole span
    # misses about half the time: kill (alternating the signals) until 10 kills have landed
    # inside a run, 60 tries at most (at 9 in 20 landing, as measured, 60 tries fall short of
    # 10 with probability 1e-6; at 3 in 10, with 6e-3).
    landed = 0
    for attempt in range(60):
        if landed >= 10:
            break
        sig = (signal.SIGKILL, signal.SIGTERM)[attempt % 2]
        done = theoryc(made, *args, "--resume", "-o", out, kill_after=rng.uniform(0, span), sig=sig)
        landed += done.rc != 0
        # finished, killed, or stopped by SIGTERM (143 with its message once the command line
        # has installed its handler, the default action before that)
        assert done.rc in (0, -signal.SIGKILL, 143, -signal.SIGTERM), done.text
        assert "Traceback" not in done.text, done.text
        if (made / out).exists():            # a file that exists is complete: the reference's
            assert contents(made / out) == expected
            if done.rc == 0:
                fresh(made, out)             # start over, so that later moments land in a run
    assert landed >= 10, f"only {landed} of 60 kills landed inside a run"
    done = theoryc(made, *args, "--resume", "-o", out)
    assert done.rc == 0, done.text
    assert contents(made / out) == expected
    assert not list(made.glob(f".{out}*")) and not (made / f"{out}.ckpt").exists()


def test_training_resume_with_other_parameters_is_refused(made):
    """Was: the trainer's refusal printed two sha256 digests; measure of a training checkpoint
    said 'damaged'."""
    train = ("train", "phi4_2d", "--model", "flow", "--set", "L=4", "--steps", "100000",
             "--layers", "1", "--hidden", "4", "--checkpoint-every", "2", "--quiet")
    fresh(made, "tr.pt")
    done = theoryc(made, *train, "-o", "tr.pt", wait_for=made / "tr.pt.ckpt", kill_after=0.05,
                   sig=signal.SIGTERM)
    assert done.rc == 143 and "--resume" in done.err, done.text
    theoryc(made, *train, "--set", "kappa=0.3", "--resume", "-o", "tr.pt").one_line_error(
        "tr.pt.ckpt", "kappa=0.21 there, 0.3 here")
    theoryc(made, "measure", "tr.pt.ckpt").one_line_error("training checkpoint")
