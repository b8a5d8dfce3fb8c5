"""What a run leaves behind and reads back: env names, checkpoint files, logs, plots and evaluation."""
