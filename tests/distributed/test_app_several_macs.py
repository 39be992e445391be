"""The Train page's "Several Macs" section: Test connection runs `tailor hosts check` in an
engine worker (never on the UI thread) and shows each host, or the failure with its hint."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings

from engine.results import DATASET_SAME, DATASET_WILL_COPY, HostCheck, HostsReport

pytestmark = [pytest.mark.gui]


@pytest.fixture
def page(qtbot, tmp_path):
    from app.pages.train import TrainPage
    from app.state import AppState

    page = TrainPage(AppState(), settings=QSettings(str(tmp_path / "s.ini"),
                                                   QSettings.Format.IniFormat))
    qtbot.addWidget(page)
    return page


def recorded_report() -> HostsReport:
    """What `tailor hosts check --hosts mac1,mac2,mac3` answers: mac1 (this Mac) ready,
    mac2 without the dataset, mac3 with another MLX."""
    return HostsReport(model="/Models/qwen", data="/Data/chat.jsonl", hosts=[
        HostCheck(host="mac1", reachable=True, tailor="0.9.0", mlx="0.32.4", model="present",
                  dataset=DATASET_SAME, dataset_path="/Data/chat.jsonl", ok=True),
        HostCheck(host="mac2", reachable=True, tailor="0.9.0", mlx="0.32.4", model="present",
                  dataset=DATASET_WILL_COPY, ok=True),
        HostCheck(host="mac3", reachable=True, tailor="0.9.0", mlx="0.30.0",
                  message="host mac3 has MLX 0.30.0, this machine 0.32.4",
                  hint="install the same MLX version on every host")])


def test_test_connection_runs_the_hosts_check_in_a_worker(page, monkeypatch):
    submitted = []

    class Queue:
        def submit(self, title, argv, heavy=True):
            submitted.append((title, argv, heavy))
            raise RuntimeError("stop here")  # the argv is what matters

    page.state.queue = Queue()
    page.state.model, page.state.data = "/Models/qwen", "/Data/chat.jsonl"
    page.machines.setText("mac1,mac2")
    with pytest.raises(RuntimeError):
        page.several_macs.test_connection()
    title, argv, heavy = submitted[0]
    assert argv[1:] == ["-m", "engine", "hosts", "check", "--hosts", "mac1,mac2", "--model",
                        "/Models/qwen", "--data", "/Data/chat.jsonl", "--events", "-",
                        "--quiet"]
    assert title == "Test connection" and not heavy  # a light job: starts at once


def test_each_host_is_shown_with_versions_model_dataset_and_the_failure(page):
    section = page.several_macs
    section.show_report(recorded_report().to_dict())  # as it arrives from the worker
    text = section.status.text()
    assert not section.status_box.isHidden()
    assert ("✓ <b>mac1</b>: reachable, Tailor 0.9.0, MLX 0.32.4, model found, dataset "
            "identical") in text
    assert "✓ <b>mac2</b>: reachable" in text and "dataset will be copied" in text
    assert "✗ <b>mac3</b>" in text and "host mac3 has MLX 0.30.0, this machine 0.32.4" in text
    assert "install the same MLX version on every host" in text
    assert "Not ready: fix the host marked ✗ first." in text
    page.machines.setText("mac1,mac2")  # another list: the old answer no longer applies
    assert section.report is None and not section.status.text()


def test_nothing_to_test_on_this_mac_alone(page):
    for text, said in (("", "This Mac only"), ("2", "2 processes on this Mac")):
        page.machines.setText(text)
        assert page.several_macs.test_connection() is False
        assert said in page.several_macs.status.text()


@pytest.mark.parametrize("field, words", [
    ("tailor-test-no-such-host-1.invalid,tailor-test-no-such-host-2.invalid",
     ["✗ <b>tailor-test-no-such-host-1.invalid</b>: not reachable",
      "cannot be reached over ssh", "ssh-copy-id"]),
    ("BAD-HOSTS-FILE", ["not an MLX host file", "line 1", "ips"]),
])
def test_unreachable_hosts_and_a_bad_host_file_through_the_real_worker(page, qtbot, tmp_path,
                                                                       field, words):
    if field == "BAD-HOSTS-FILE":
        bad = tmp_path / "hosts.json"
        bad.write_text("[{\"ssh\": \"mac1\",, }]")
        field = str(bad)
    page.machines.setText(field)
    assert page.several_macs.test_connection()
    assert not page.several_macs.test_button.isEnabled()  # while the check runs
    qtbot.waitUntil(lambda: page.several_macs.test_button.isEnabled(), timeout=90_000)
    text = page.several_macs.status.text()
    for w in words:
        assert w in text, text


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_section_in_light_and_dark(page, qtbot, test_output, scheme):
    """Saved for a person to look at (test-output/screenshots/several-macs-*.png)."""
    from PySide6.QtWidgets import QApplication

    from app.main import dark_palette
    from tests.app.conftest import screenshot

    app = QApplication.instance()
    before = app.palette()
    app.setPalette(dark_palette() if scheme == "dark" else app.style().standardPalette())
    try:
        page.machines.setText("mac1,mac2,mac3")
        page.several_macs.show_report(recorded_report())
        page.resize(1280, 800)
        page.show()
        qtbot.wait(50)
        assert page.several_macs.status_box.isVisible()
        screenshot(page, test_output, f"several-macs-{scheme}-page")
        screenshot(page.several_macs, test_output, f"several-macs-{scheme}")
    finally:
        app.setPalette(before)


def test_the_host_list_is_kept_for_the_next_launch(qtbot, tmp_path):
    from app.pages.train import TrainPage
    from app.state import AppState

    def open_page():
        page = TrainPage(AppState(), settings=QSettings(str(tmp_path / "s.ini"),
                                                       QSettings.Format.IniFormat))
        qtbot.addWidget(page)
        return page

    open_page().machines.setText(" mac1,mac2 ")
    assert open_page().machines.text() == "mac1,mac2"
