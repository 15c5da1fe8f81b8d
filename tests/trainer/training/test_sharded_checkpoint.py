"""Sharded checkpoints (training.fsdp) in one process: the round trip, a planted pickle refused
unrun (the DCP metadata and values), and checkpoints of the other kind refused by name.
Resuming on other rank counts: test_fsdp.py."""
from __future__ import annotations

import pickle
import re

import pytest
import torch

from kubetune_trainer.training.checkpoint import Checkpoints
from kubetune_trainer.training.sharded_checkpoint import ShardedCheckpoints
from test_checkpoint import _one_process, _Planted, _training_state


def _saved(tmp_path) -> tuple[ShardedCheckpoints, torch.nn.Module]:
    checkpoints = ShardedCheckpoints(tmp_path / "out", keep=2, accelerator=_one_process())
    checkpoints.latest()  # as the loop does first: checks that every rank sees output.path
    model, optimizer, scheduler = _training_state(0)
    checkpoints.save(5, model, optimizer, scheduler, {"history": [{"step": 5}]})
    return checkpoints, model


def test_a_sharded_checkpoint_round_trips(tmp_path):
    checkpoints, saved = _saved(tmp_path)
    model, optimizer, scheduler = _training_state(1)
    state = checkpoints.load(checkpoints.latest(), model, optimizer, scheduler)
    assert state["step"] == 5 and state["ranks"] == 1 and state["history"] == [{"step": 5}]
    torch.testing.assert_close(model.weight, saved.weight, rtol=0, atol=0)
    assert optimizer.state[model.weight]["exp_avg"].abs().sum() > 0 and scheduler.last_epoch == 1
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints" / "step-5").iterdir()) == \
        ["rng-0.pt", "scheduler.pt", "shards", "trainer_state.json"]


def test_a_planted_pickle_in_the_metadata_is_refused_unrun(tmp_path):
    checkpoints, _ = _saved(tmp_path)
    metadata, marker = tmp_path / "out" / "checkpoints" / "step-5" / "shards" / ".metadata", tmp_path / "ran"
    metadata.write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(ValueError, match=f"{re.escape(str(metadata))} holds more than checkpoint metadata"):
        checkpoints.load(checkpoints.latest(), *_training_state(1))
    assert not marker.exists()



@pytest.mark.parametrize("name", ["os.system", "torch.load", "Metadata.__init__.__globals__"])
def test_names_reached_through_the_metadata_module_are_refused_unrun(tmp_path, name):
    """Protocol 4 resolves dotted names: the metadata module's own imports must not be reachable."""
    checkpoints, _ = _saved(tmp_path)
    metadata, marker = tmp_path / "out" / "checkpoints" / "step-5" / "shards" / ".metadata", tmp_path / "ran"
    module = b"torch.distributed.checkpoint.metadata"
    argument = f"touch {marker}".encode()
    # PROTO 4, SHORT_BINUNICODE module and name, STACK_GLOBAL, the argument, TUPLE1, REDUCE, STOP.
    planted = (b"\x80\x04" + b"\x8c" + bytes([len(module)]) + module + b"\x8c" + bytes([len(name)]) + name.encode()
               + b"\x93" + b"\x8c" + bytes([len(argument)]) + argument + b"\x85R.")
    metadata.write_bytes(planted)
    with pytest.raises(ValueError, match="holds more than checkpoint metadata"):
        checkpoints.load(checkpoints.latest(), *_training_state(1))
    assert not marker.exists()

def test_checkpoints_of_the_other_kind_are_refused_by_name(tmp_path):
    checkpoints, _ = _saved(tmp_path)
    plain = Checkpoints(tmp_path / "out", keep=2, accelerator=_one_process())
    with pytest.raises(ValueError, match="is a sharded checkpoint \\(written with training.fsdp.enabled\\)"):
        plain.load(plain.latest(), *_training_state(1))
    other = tmp_path / "other"
    Checkpoints(other, keep=2, accelerator=_one_process()).save(3, *_training_state(0), {})
    sharded = ShardedCheckpoints(other, keep=2, accelerator=_one_process())
    with pytest.raises(ValueError, match="is not a sharded checkpoint"):
        sharded.load(sharded.latest(), *_training_state(1))


def test_a_checkpoint_of_other_parameters_is_refused(tmp_path):
    checkpoints, _ = _saved(tmp_path)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))  # parameter "0.weight", the checkpoint has "weight"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(ValueError, match="does not match this run's trainable parameters"):
        checkpoints.load(checkpoints.latest(), model, optimizer, scheduler)
