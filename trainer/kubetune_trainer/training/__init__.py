"""The training run: the loop, loss, checkpoints, stopping, processes and their rendezvous."""
