"""Speed behind seams: verified TorchScript traces, the learner process and data-parallel learners.

Each piece is a drop-in for an eager, in-process default of the same interface.
"""
