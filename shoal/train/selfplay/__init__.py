"""Self-play: the league that decides who fills the non-learner seats, its opponents and their ratings."""
