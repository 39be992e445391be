"""Evaluate an adapter: did it learn the task on held-out examples (``heldout``, on the
examples ``sources`` picks, scored by ``scores``), did it keep the base's general skills
(``probe``), does the shipped file answer like the trained model (``parity``); the run's
``baseline`` before step 1; batched greedy generation for all of them (``generation``; one
prompt at a time with logit gaps: ``greedy``). ``run`` is one `tailor eval` (``cli``), kept
in the adapter's record by ``record``, and written as Markdown by ``markdown``.

This package sits below ``train`` in the layers contract (train/run.py records the baseline),
so nothing here imports engine.train or engine.export."""
