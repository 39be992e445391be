"""Each host's own step rate in a distributed run's log: a rank other than 0 trains with a
reporter (distributed.train_worker passes the job's), which writes a `[rank N] step ...` line
every tenth of the run, and the launcher logs it naming the host."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from engine.events import Job, Log, Step
from engine.train import distributed, launch
from engine.train.hosts import Host

HOSTS = [Host("mac1", ["10.0.0.1"]), Host("mac2", ["10.0.0.2"])]


def test_a_ranks_steps_become_a_throttled_log_line_with_its_hosts_rate(capsys):
    say = launch._rank_reporter(1)
    for i in range(1, 101):
        say(Step(job="train", iteration=i, total_iterations=100, tokens_per_second=150.0 + i,
                 peak_memory_gb=0.5 + i / 1000))
    written = capsys.readouterr().err.splitlines()
    assert written[0] == "[rank 1] step 1/100 at 151 tokens/s on this host, peak memory 501 MB"
    assert [line.split()[3] for line in written] == [f"{i}/100" for i in range(1, 100, 10)]
    events = []
    news = launch._RankNews(HOSTS, Job("train", report=events.append))
    assert all(news.rank_line(line + "\r\n") for line in written)
    messages = [e.message for e in events if isinstance(e, Log)]
    assert messages[-1] == ("rank 1 on mac2: step 91/100 at 241 tokens/s on this host, peak "
                            "memory 591 MB")
    assert {e.level for e in events} == {"info"}
    launch._rank_reporter(2)(Step(job="train", iteration=1, total_iterations=4,
                                  tokens_per_second=12.0))  # no memory figure: none said
    assert capsys.readouterr().err == "[rank 2] step 1/4 at 12 tokens/s on this host\n"


def test_the_worker_trains_with_the_jobs_reporter(monkeypatch, tmp_path, capsys):
    """train_worker on a rank other than 0 hands the job's reporter (the rank's stderr lines)
    to its trainer: without it no Step of that rank reaches the log."""
    import engine.train.adapters as adapters
    import engine.train.preference as preference
    import engine.train.run as run_module

    run = SimpleNamespace(dataset={"schema": "chat"}, net=object(),
                          tokenizer=SimpleNamespace(pad_token_id=0),
                          prepared=SimpleNamespace(train=[], valid=[]))
    monkeypatch.setattr(run_module, "_load", lambda *a, **k: run)
    monkeypatch.setattr(preference, "check_objective", lambda *a, **k: None)
    monkeypatch.setattr(adapters, "apply_adapters", lambda *a, **k: None)
    monkeypatch.setattr(distributed, "run_record", lambda: None)

    class Trainer:
        def __init__(self, *args, report=lambda event: None, job="", **kw):
            self.report, self.job = report, job

        def run(self):
            self.report(Step(job=self.job, iteration=4, total_iterations=8,
                             tokens_per_second=99.4, peak_memory_gb=1.25))

    monkeypatch.setattr(distributed, "trainer_for", lambda cfg: Trainer)
    cfg = SimpleNamespace(validate=lambda: None, seed=0)
    job = Job("train", report=launch._rank_reporter(1))
    distributed.train_worker("model", Path(tmp_path / "d.jsonl"), "run", cfg, None, job=job)
    assert capsys.readouterr().err == (
        "[rank 1] step 4/8 at 99 tokens/s on this host, peak memory 1.25 GB\n")
