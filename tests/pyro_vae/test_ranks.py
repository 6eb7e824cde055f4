"""pyro_vae.ranks.own_process_group: the process group a training made (gloo, which Lightning
never destroys) is destroyed when it ends well, before the interpreter's exit can abort on it; a
group the caller made is the caller's, and after an error nothing is destroyed."""

from pathlib import Path

import pytest
import torch.distributed as dist

from pyro_vae.ranks import own_process_group, world


def make_group(store: Path) -> None:
    """A one-process gloo group, as Lightning's DDP makes one under torchrun."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)


@pytest.fixture(autouse=True)
def no_group_left():
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_a_group_made_inside_is_destroyed_when_the_block_ends(tmp_path):
    with own_process_group():
        make_group(tmp_path / "store")
        assert world() == (0, 1) and dist.is_initialized()
    assert not dist.is_initialized()


def test_a_group_made_before_is_left_to_its_maker(tmp_path):
    make_group(tmp_path / "store")
    with own_process_group():
        pass
    assert dist.is_initialized()


def test_after_an_error_the_group_is_left_alone(tmp_path):
    with pytest.raises(RuntimeError, match="a rank failed"), own_process_group():
        make_group(tmp_path / "store")
        raise RuntimeError("a rank failed")
    assert dist.is_initialized()
