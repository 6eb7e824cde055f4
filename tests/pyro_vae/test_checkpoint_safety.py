"""Checkpoints are read as weights only: a planted pickle payload is refused and never runs."""

import pickle

import pytest
import torch

from pyro_vae.prepared import load_run
from pyro_vae.registry import SpecError
from pyro_vae.rundir import CHECKPOINTS, CONFIG
from pyro_vae.spec import dump_spec, load_spec

QUICK = ["latent_dim=2", "encoder.hidden=[8]", "decoder.hidden=[8]"]


class Payload:
    """Unpickling this calls ``open(marker, "w")``: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def fake_run(tmp_path, content_writer):
    run = tmp_path / "run"
    (run / CHECKPOINTS).mkdir(parents=True)
    dump_spec(load_spec(None, QUICK), run / CONFIG)
    content_writer(run / CHECKPOINTS / "last.ckpt")
    return run


def test_a_pickle_payload_in_a_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    # sanity: plain unpickling of this payload really would run code
    pickle.loads(pickle.dumps(Payload(str(tmp_path / "control"))))
    assert (tmp_path / "control").exists()

    run = fake_run(tmp_path, lambda p: torch.save({"state_dict": Payload(str(marker))}, p))
    with pytest.raises(SpecError) as info:
        load_run(run)
    assert "cannot read checkpoint" in str(info.value)
    assert not marker.exists()


class Shell:
    """Unpickling this calls ``os.system``, a global torch's weights-only loader blocks by
    module (its wording differs from the one for ``open``)."""

    def __reduce__(self):
        import os

        return (os.system, ("true",))


@pytest.mark.parametrize("payload, named", [(Payload("never"), "open"), (Shell(), "system")])
def test_a_refused_payload_is_named_not_met_with_torchs_advice(tmp_path, payload, named):
    """The line says what the file asked for, and never repeats torch's advice to load it with
    ``weights_only=False``."""
    run = fake_run(tmp_path, lambda p: torch.save({"state_dict": payload}, p))
    with pytest.raises(SpecError) as info:
        load_run(run)
    text = str(info.value)
    assert "refused by weights-only loading" in text and named in text, text
    assert "weights_only" not in text and "\n" not in text


@pytest.mark.parametrize(
    "content, says",
    [
        (b"\x80\x04not a checkpoint at all", "cannot read checkpoint"),
        (b"", "cannot read checkpoint: EOFError: the file ends early"),  # torch's own text is empty
        (b"\x80\x04", "cannot read checkpoint: EOFError: the file ends early"),
    ],
)
def test_a_corrupt_checkpoint_is_a_clean_error(tmp_path, content, says):
    run = fake_run(tmp_path, lambda p: p.write_bytes(content))
    with pytest.raises(SpecError, match=says):
        load_run(run)


def test_a_checkpoint_of_another_spec_explains_the_shape_mismatch(tmp_path):
    def other_weights(path):
        from pyro_vae.vae import VAE

        other = VAE.from_spec(
            load_spec(None, ["latent_dim=3", "encoder.hidden=[8]", "decoder.hidden=[8]"]), (1, 8, 8)
        )
        torch.save({"state_dict": {f"vae.{k}": v for k, v in other.state_dict().items()}}, path)

    run = fake_run(tmp_path, other_weights)
    with pytest.raises(SpecError) as info:
        load_run(run)
    assert "does not match" in str(info.value) and "size mismatch" in str(info.value)
