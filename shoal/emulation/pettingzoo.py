class PettingZooEmulator:
    pass
