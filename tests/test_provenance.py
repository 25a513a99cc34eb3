"""One theory fingerprint (runtime/io/provenance.py) for every file: model files record it, a
model file written before they did is checked by one rebuilt from what it holds, and a training
checkpoint of another theory is refused in words by the trainer itself."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import fakes
import theoryc
from theoryc.api import check_model_theory
from theoryc.runtime.errors import SamplerError
from theoryc.runtime.io.provenance import as_text, fingerprint, from_text, model_fingerprint
from theoryc.runtime.models import load_model, save_model
from theoryc.runtime.models.variational import train_flow

TINY = dict(batch_size=8, n_layers=2, hidden=4, dtype=torch.float64, progress=False, seed=0)


@pytest.fixture(scope="module")
def flow_file(tmp_path_factory):
    theory = fakes.phi4_lattice((4, 4), kappa=0.2, lam=0.5)
    path = tmp_path_factory.mktemp("prov") / "flow.pt"
    save_model(train_flow(theory, steps=2, **TINY), path)     # the theory recorded at training
    return theory, path


def test_a_model_file_records_the_theorys_fingerprint(flow_file):
    theory, path = flow_file
    payload = torch.load(path, weights_only=True)
    assert payload["provenance"] == as_text(fingerprint(theory))
    model = load_model(path)
    assert model_fingerprint(model.meta) == fingerprint(theory)      # field kinds included
    check_model_theory(model, theory, path=path, exact=False)
    with pytest.raises(SamplerError, match="flow.pt was trained for fields of kind real; this "
                                           "theory's are angle"):
        check_model_theory(model, dataclasses.replace(theory, field_kinds=("angle",)),
                           path=path, exact=False)


def test_an_older_model_file_without_a_fingerprint_is_still_checked(flow_file, tmp_path):
    theory, path = flow_file
    payload = torch.load(path, weights_only=True)
    del payload["provenance"]                        # as model files were written before
    torch.save(payload, tmp_path / "old.pt")
    model = load_model(tmp_path / "old.pt")
    assert model.meta["provenance"] is None
    check_model_theory(model, theory, path="old.pt", exact=False)
    with pytest.raises(SamplerError, match="old.pt was trained for lattice 4 x 4; this theory "
                                           "is 6 x 6"):
        check_model_theory(model, fakes.phi4_lattice((6, 6), kappa=0.2, lam=0.5),
                           path="old.pt", exact=False)
    save_model(model, tmp_path / "again.pt")         # saved again: it records a fingerprint now
    again = from_text(torch.load(tmp_path / "again.pt", weights_only=True)["provenance"])
    assert again == model_fingerprint(model.meta) and again["shape"] == [1, 4, 4]
    check_model_theory(load_model(tmp_path / "again.pt"), theory, path="again.pt", exact=False)


def stopped_training(tmp_path) -> tuple:
    """(theory, checkpoint) of a flow training stopped half-way."""
    theory = fakes.phi4_lattice((4, 4), kappa=0.2, lam=0.5)
    path = str(tmp_path / "f.ckpt")
    train_flow(theory, steps=4, stop_after=2, checkpoint=path, **TINY)
    return theory, path


def test_training_resume_of_another_lattice_is_refused_by_the_trainer(tmp_path):
    """theoryc.train --resume: the trainer reads the checkpoint once and names the lattice."""
    from theoryc.runtime.io import checkpoint as ck
    _, path = stopped_training(tmp_path)
    reads, real = [], ck.load_checkpoint
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ck, "load_checkpoint", lambda p: reads.append(p) or real(p))
        import theoryc.runtime.models.trainer as trainer
        mp.setattr(trainer, "load_checkpoint", lambda p: reads.append(p) or real(p))
        with pytest.raises(SamplerError, match=r"f.ckpt was made for lattice 4 x 4; this theory "
                                               r"is 6 x 6 \(resume with the training's own"):
            theoryc.train(fakes.phi4_lattice((6, 6), kappa=0.2, lam=0.5), "flow",
                          checkpoint=path, resume=True, steps=4, **TINY)
    assert reads == [path]


def test_a_training_checkpoint_with_an_older_theory_digest_is_refused_clearly(tmp_path):
    import json
    from theoryc.runtime.io.checkpoint import load_checkpoint, save_checkpoint
    theory, path = stopped_training(tmp_path)
    snap = load_checkpoint(path)
    settings = json.loads(snap["settings"])
    settings["theory"] = "0" * 64                    # what an older theoryc recorded: a digest
    save_checkpoint(path, {**snap, "settings": json.dumps(settings, sort_keys=True)})
    with pytest.raises(SamplerError, match="f.ckpt was made by an older theoryc.*remove it"):
        train_flow(theory, steps=4, checkpoint=path, resume=True, **TINY)


def test_an_observed_ensemble_records_the_new_theorys_fingerprint(tmp_path):
    """`observe` writes the new theory's name, source and parameters: its fingerprint too (it
    kept the sampled theory's, so the file was checked as the old theory's while saying new)."""
    from theoryc.api import training_data
    from theoryc.runtime.io.ensemble import read_ensemble
    from theoryc.runtime.io.provenance import ensemble_fingerprint
    path, out = tmp_path / "e.h5", tmp_path / "observed.h5"
    theoryc.sample(theoryc.load("phi4_2d", L=4), "langevin", n=4, chains=1, warmup=2,
                   progress=False, output=path)
    theoryc.observe(path, "phi4_2d", out, params={"kappa": 0.3})
    new = theoryc.load("phi4_2d", L=4, kappa=0.3)
    assert ensemble_fingerprint(read_ensemble(out, configs=False)) == fingerprint(new)
    assert training_data(out, new).shape == (1, 4, 1, 4, 4)


def test_resume_of_a_finished_training_checks_its_model_file(tmp_path, capsys):
    """train --resume with the model file written and no checkpoint: the file is returned, not
    retrained, once it is checked against the theory."""
    theory = fakes.phi4_lattice((4, 4), kappa=0.2, lam=0.5)
    out = tmp_path / "done.pt"
    first = theoryc.train(theory, "flow", output=out, steps=2, **TINY)
    again = theoryc.train(theory, "flow", output=out, resume=True, steps=2, **TINY)
    assert again.path == out and again.history == first.history
    assert "already complete" in capsys.readouterr().err
    with pytest.raises(SamplerError, match="done.pt was trained for lattice 4 x 4; this theory "
                                           "is 6 x 6"):
        theoryc.train(fakes.phi4_lattice((6, 6), kappa=0.2, lam=0.5), "flow", output=out,
                      resume=True, steps=2, **TINY)
