"""Models and pure helpers behind the pages, tested without views."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from app.history import LossHistory, decimate


def _adapter(home, name, status="finished", best=1.5, steps=10, when=None, weights=True):
    folder = home / "adapters" / name
    folder.mkdir(parents=True)
    if weights:
        (folder / "adapters.safetensors").write_bytes(b"x")
    (folder / "manifest.json").write_text(json.dumps({
        "name": name, "status": status, "best_val_loss": best, "steps": steps,
        "created": when or time.time(), "base_model": {"path": "/models/Qwen2.5-0.5B"},
        "dataset": {"path": "/data/chat.jsonl"},
        "loss_history": {"train": [[1, 3.0], [2, 2.5]], "valid": [[2, 2.7]]}}))


def test_adapter_table_model_columns(qapp, tailor_home):
    from app.pages.library import AdapterTableModel as M

    _adapter(tailor_home, "alpha", best=1.25, steps=40, when=1_700_000_000)
    _adapter(tailor_home, "beta", status="cancelled", best=None, steps=7)
    m = M()
    m.refresh()
    assert m.rowCount() == 2 and m.columnCount() == 7
    a = m.row_of("alpha")
    cell = lambda row, col: m.data(m.index(row, col))
    assert cell(a, M.NAME) == "alpha"
    assert cell(a, M.BASE) == "Qwen2.5-0.5B"
    assert cell(a, M.DATASET) == "chat.jsonl"
    assert cell(a, M.STEPS) == "40"
    assert cell(a, M.BEST_VAL) == "1.2500"
    assert cell(a, M.STATUS) == "finished"
    assert cell(a, M.DATE).startswith("2023-11-1")
    b = m.row_of("beta")
    assert cell(b, M.BEST_VAL) == "" and cell(b, M.STATUS) == "cancelled"
    assert m.headerData(M.BEST_VAL, __import__("PySide6.QtCore").QtCore.Qt.Orientation.Horizontal) \
        == "Best val loss"


def test_library_page_rename_and_delete_need_confirmation(qtbot, tailor_home):
    from app.pages.library import LibraryPage
    from app.state import AppState

    _adapter(tailor_home, "keep-me")
    answers = {"confirm": False}
    page = LibraryPage(AppState(), confirm=lambda t, x, verb: answers["confirm"],
                       ask_text=lambda t, l, d: "renamed")
    qtbot.addWidget(page)
    assert page.select("keep-me")
    page._act("delete")
    assert (tailor_home / "adapters" / "keep-me").is_dir()  # said no: nothing deleted
    page._act("rename")
    assert page.model.row_of("renamed") >= 0 and page.selected_name() == "renamed"
    _adapter(tailor_home, "other")
    page.refresh()
    page.select("other")
    page.ask_text = lambda t, l, d: "renamed"
    page._act("rename")  # a name in use is refused, with the engine's message
    assert page.banner.kind == "error" and "already exists" in page.banner.text()
    assert (tailor_home / "adapters" / "other").is_dir()
    answers["confirm"] = True
    page.select("renamed")
    page._act("delete")
    assert not (tailor_home / "adapters" / "renamed").exists()
    assert page.model.row_of("renamed") == -1


def test_loss_history_decimates_long_runs_and_skips_non_finite():
    h = LossHistory()
    for i in range(100_000):
        h.add_train(i + 1, 5.0 - i * 1e-5)
    h.add_train(100_001, "nan")
    # Every point survives the buffer's growth, in order (non-finite ones are not points).
    assert len(h) == 100_000 and h.train_steps[0] == 1 and h.train_loss[12_345] == 5.0 - 12_345e-5
    x, y = h.train_curve(max_points=2000)
    assert len(x) == 2000 and x[-1] == 100_000 and y[-1] == pytest.approx(5.0 - 99_999e-5)
    assert np.all(np.diff(x) > 0)
    xs, ys = decimate([1, 2, 3], [3, 2, 1], 10)
    assert list(xs) == [1, 2, 3]


def test_estimate_counts_lora_parameters_like_the_engine(tiny_model):
    """The preview's trainable count equals the engine's exact count for the same settings."""
    import subprocess
    import sys

    from app.estimate import estimate, read_model_config

    folder = tiny_model("qwen2")
    est = estimate(read_model_config(folder), {"method": "lora", "rank": 8,
                                               "targets": "all-linear", "num_layers": -1})
    code = ("import json,sys; from engine.models import load_model; "
            "from engine.train.config import TrainConfig; "
            "from engine.train.adapters import apply_adapters; "
            "from mlx.utils import tree_flatten; "
            "m,_,_ = load_model(sys.argv[1]); apply_adapters(m, TrainConfig(rank=8)); "
            "print(sum(v.size for _, v in tree_flatten(m.trainable_parameters())))")
    exact = int(subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                               text=True, check=True).stdout.split()[-1])
    assert est.trainable_params == exact


def test_drop_classification(tmp_path):
    from app.main_window import classify_drop

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data = tmp_path / "d.jsonl"
    data.write_text("")
    assert classify_drop([data]) == ("data", data)
    assert classify_drop([data, model]) == ("model", model)
    assert classify_drop([tmp_path / "folder-of-files"]) == ("data", tmp_path / "folder-of-files")
    assert classify_drop([]) is None


def test_library_overlays_a_second_run(qtbot, tailor_home):
    from app.pages.library import LibraryPage
    from app.state import AppState

    _adapter(tailor_home, "one")
    _adapter(tailor_home, "two")
    page = LibraryPage(AppState())
    qtbot.addWidget(page)
    page.select("one")
    page.compare_box.setCurrentIndex(page.compare_box.findData("two"))
    assert len(page.chart.compare) == 1
    history, train_item, valid_item = page.chart.compare[0]
    page.chart.refresh()
    assert list(train_item.getData()[1]) == [3.0, 2.5] and list(valid_item.getData()[1]) == [2.7]
    page.compare_box.setCurrentIndex(0)
    assert page.chart.compare == []


def test_model_page_describes_a_local_model_and_offers_a_download_for_an_id(qtbot, tiny_model):
    from app.pages.model import ModelPage
    from app.state import AppState

    state = AppState()
    page = ModelPage(state)
    qtbot.addWidget(page)
    state.set_model(str(tiny_model("qwen2")))
    assert page.info_labels["architecture"].text().startswith("qwen2")
    assert page.info_labels["gguf"].text() == "yes"
    assert page.info_labels["parameters"].text().endswith("k")
    state.set_model("mlx-community/Qwen2.5-0.5B-Instruct-4bit")
    assert "Hugging Face id" in page.banner.text() and "download" in page.banner.buttons
    state.set_model("/no/such/folder")
    assert page.banner.kind == "error" and "no such folder" in page.banner.text()


def test_window_state_and_page_are_restored(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from app.main_window import MainWindow

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    first = MainWindow(settings, confirm=lambda *_: True, first_run_sample=False)
    qtbot.addWidget(first)
    first.show()
    qtbot.waitExposed(first)
    first.setGeometry(40, 50, 1111, 777)
    qtbot.wait(50)
    saved = first.geometry()
    first.show_page("Library")
    first.state.set_model("/models/some-model")
    first.close()
    second = MainWindow(settings, confirm=lambda *_: True, first_run_sample=False)
    qtbot.addWidget(second)
    second.show()
    qtbot.waitExposed(second)
    assert second.current_page() == "Library"
    # The offscreen screen is 800x600, so the restored geometry is clamped to it; check that
    # the geometry was saved rather than a size the platform cannot show.
    assert not settings.value("window/geometry").isEmpty()
    assert saved.width() == 1111
    assert second.state.model == "/models/some-model"


def test_first_run_loads_the_sample_dataset_once(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from app.main_window import MainWindow, sample_dataset

    sample = sample_dataset()
    assert sample is not None and sample.exists(), "resources/samples has no dataset"
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    first = MainWindow(settings, confirm=lambda *_: True)
    qtbot.addWidget(first)
    assert first.state.data == str(sample)
    first.close()
    again = MainWindow(settings, confirm=lambda *_: True)
    qtbot.addWidget(again)
    assert again.state.data == ""


def test_a_run_whose_process_died_shows_as_interrupted_and_resumable(qtbot, tailor_home):
    import socket
    import subprocess
    import sys

    from app.pages.library import AdapterTableModel as M
    from app.pages.library import LibraryPage
    from app.state import AppState

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _adapter(tailor_home, "killed", status="running")
    m = json.loads((tailor_home / "adapters" / "killed" / "manifest.json").read_text())
    m.update(pid=dead.pid, host=socket.gethostname())
    (tailor_home / "adapters" / "killed" / "manifest.json").write_text(json.dumps(m))
    _adapter(tailor_home, "alive", status="running")
    m = json.loads((tailor_home / "adapters" / "alive" / "manifest.json").read_text())
    m.update(pid=__import__("os").getpid(), host=socket.gethostname())
    (tailor_home / "adapters" / "alive" / "manifest.json").write_text(json.dumps(m))
    page = LibraryPage(AppState())
    qtbot.addWidget(page)
    model = page.model
    assert model.value(model.row_of("killed"), M.STATUS) == "interrupted"
    assert model.value(model.row_of("alive"), M.STATUS) == "running"
    page.select("killed")
    assert page.buttons["resume"].isEnabled()
    page.select("alive")
    assert not page.buttons["resume"].isEnabled() and not page.buttons["delete"].isEnabled()


def test_a_download_that_cannot_happen_says_why(qtbot, monkeypatch):
    """Offline (as every test is: HF_HUB_OFFLINE=1), the download worker's failure reaches
    the Model page as a plain message and the buttons come back."""
    from app.pages.model import ModelPage
    from app.state import AppState

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    page = ModelPage(AppState())
    qtbot.addWidget(page)
    page.download("mlx-community/Qwen2.5-0.5B-Instruct-4bit")
    assert not page.download_button.isEnabled() and page.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: page.job.done, timeout=60000)
    assert page.job.state == "failed"
    assert page.banner.kind == "error" and "downloads are off" in page.banner.text()
    assert page.download_button.isEnabled() and not page.cancel_button.isEnabled()


def test_train_settings_are_remembered_as_the_next_defaults(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from app.pages.train import TrainPage
    from app.state import AppState

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    page = TrainPage(AppState(), settings=settings)
    qtbot.addWidget(page)
    page.preset.setCurrentIndex(page.preset.findData("thorough"))
    page.form.set_values({"rank": 12, "learning_rate": 3e-4})
    page._remember_defaults()
    again = TrainPage(AppState(), settings=settings)
    qtbot.addWidget(again)
    assert again.preset.currentData() == "thorough"
    assert again.settings_values()["rank"] == 12
    assert again.settings_values()["learning_rate"] == pytest.approx(3e-4)
    assert again.settings_values()["epochs"] == 3.0  # the preset's own value
