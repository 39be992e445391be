"""`tailor hosts check`: every host reported (the launcher stops at the first problem), one
line each on the terminal, the typed HostsReport in the Finished event, exit 1 unless all
hosts are ready."""
from __future__ import annotations

import json

from engine.cli import main


def test_unreachable_hosts_are_each_reported_with_why_and_the_hint(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["tailor", "hosts"])
    names = "tailor-test-no-such-host-1.invalid,tailor-test-no-such-host-2.invalid"
    assert main(["hosts", "check", "--hosts", names]) == 1
    out = capsys.readouterr().out.splitlines()
    first, second = names.split(",")
    assert out[0].startswith(f"✗ {first}: host {first} cannot be reached over ssh: ")
    assert out[1].strip().startswith(f"check `ssh {first}` works without a password")
    assert out[2].startswith(f"✗ {second}: host {second} cannot be reached over ssh: ")


def test_the_report_crosses_the_process_boundary_typed(capsys, monkeypatch):
    from engine.events import decode_event
    from engine.results import HostsReport

    monkeypatch.setattr("sys.argv", ["tailor", "hosts"])
    assert main(["hosts", "check", "--hosts", "a.invalid,b.invalid", "--events", "-",
                 "--quiet"]) == 1
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    finished = decode_event(json.dumps(lines[-1]))
    assert isinstance(finished.result, HostsReport) and not finished.result.ok
    assert [h.host for h in finished.result.hosts] == ["a.invalid", "b.invalid"]
    assert all(not h.reachable and h.hint for h in finished.result.hosts)


def test_a_bad_host_list_fails_with_its_message(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["tailor", "hosts"])
    assert main(["hosts", "check", "--hosts", "127.0.0.1,mac2"]) == 1
    err = capsys.readouterr().err
    assert "127.0.0.1 cannot be listed with other machines" in err and "hint:" in err
