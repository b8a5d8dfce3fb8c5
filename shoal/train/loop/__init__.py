"""The training loop: acting in the vector env, collecting rollouts, learning, checkpoints of the loop's state."""
