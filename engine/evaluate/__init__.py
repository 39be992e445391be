"""Evaluate an adapter: did it learn the task on held-out examples (``heldout``), did it keep
the base's general skills (``probe``), does the shipped file answer like the trained model
(``parity``); batched greedy generation for all of them (``generation``)."""
