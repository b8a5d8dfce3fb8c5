"""Fault injection: failing and crashing envs and workers, interrupted and killed training, damaged checkpoints.

Every case checks the error's type, that its message names the env, worker or file and the call, that it comes
within a few seconds, and that nothing is left behind (worker processes, ``/dev/shm`` files).
"""
