"""Two gloo processes on this machine, as two ranks of a multi-node job: they pass the
rendezvous check only when both hold the job's token, and they exchange values and state as
tensors (rankwire), never as pickles."""
from __future__ import annotations

import multiprocessing
import socket
from datetime import timedelta

import torch


TOKEN = "ab" * 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, token: str, results) -> None:
    """One process: joins the group, runs the check, and on success exchanges values."""
    import os

    import torch.distributed as dist

    from kubetune_api import wire
    from kubetune_trainer.training import rankwire, rendezvous

    if token:
        os.environ[wire.ENV_RENDEZVOUS_TOKEN] = token
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=30))
    try:
        rendezvous.verify("cpu")
        state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.full((2, 2), float(rank))}},
                 "param_groups": [{"betas": (0.9, 0.999), "params": [0]}], "rng": torch.get_rng_state()}
        got = rankwire.broadcast_state(state if rank == 0 else None, "cpu")
        results.put((rank, "ok", {  # plain values: tensors would go through shared memory the child frees
            "latest": rankwire.broadcast_json("step-4" if rank == 0 else None, "cpu"),
            "seen": rankwire.all_gather_json(rank == 0, "cpu"),
            "empty": rankwire.broadcast_bytes(b"" if rank == 0 else None, "cpu"),
            "state": {"keys": list(got["state"]), "betas": got["param_groups"][0]["betas"],
                      "exp_avg": got["state"][0]["exp_avg"].tolist(), "rng": str(got["rng"].dtype)},
            "gathered": rankwire.all_gather_state({"python": (3, (rank, 7), None)}, "cpu"),
        }))
    except rendezvous.RendezvousError as e:
        results.put((rank, "refused", str(e)))
    finally:
        dist.destroy_process_group()


def _run(tokens: tuple[str, str]) -> dict:
    context = multiprocessing.get_context("spawn")
    results, port = context.Queue(), _free_port()
    ranks = [context.Process(target=_rank, args=(rank, port, token, results)) for rank, token in enumerate(tokens)]
    for process in ranks:
        process.start()
    outcome = {}
    for _ in ranks:
        rank, verdict, value = results.get(timeout=60)
        outcome[rank] = (verdict, value)
    for process in ranks:
        process.join(timeout=30)
    return outcome


def test_ranks_holding_the_token_pass_and_exchange_values_without_pickles():
    outcome = _run((TOKEN, TOKEN))
    for rank in (0, 1):
        verdict, got = outcome[rank]
        assert verdict == "ok", got
        assert got["latest"] == "step-4" and got["seen"] == [True, False] and got["empty"] == b""
        # Int keys and tuples come back as they were sent, and rank 0's tensors reach rank 1.
        assert got["state"] == {"keys": [0], "betas": (0.9, 0.999), "exp_avg": [[0.0, 0.0], [0.0, 0.0]], "rng": "torch.uint8"}
        assert got["gathered"] == [{"python": (3, (0, 7), None)}, {"python": (3, (1, 7), None)}]


def test_a_rank_with_another_token_stops_every_rank():
    outcome = _run((TOKEN, "cd" * 32))
    for rank in (0, 1):
        verdict, message = outcome[rank]
        assert verdict == "refused", message
    assert outcome[0][1].startswith("a process that does not hold this job's rendezvous token joined rank 1")


def test_proofs_are_bound_to_the_token_and_the_rank():
    from kubetune_trainer.training.rendezvous import proof

    assert proof(TOKEN, 1, 2) == proof(TOKEN, 1, 2) and len(proof(TOKEN, 1, 2)) == 32
    assert len({proof(TOKEN, 0, 2), proof(TOKEN, 1, 2), proof(TOKEN, 1, 3), proof("cd" * 32, 1, 2)}) == 4
    assert proof("", 1, 2) == b""  # no token (one node, no operator): an empty proof, which a token's never matches
