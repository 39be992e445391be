"""Walk every page of the real window at a given size and save screenshots (a look-see tool).

    xvfb-run -s "-screen 0 1920x1080x24" .venv/bin/python bench/app_tour.py --size 1280x800

Trains a short run on the tiny qwen2 model first (so Train, Library, Export have content) and
writes PNGs to test-output/tour-WxH/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="1280x800")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--dark", action="store_true", help="ask Qt for the dark colour scheme")
    a = p.parse_args()
    w, h = map(int, a.size.split("x"))
    home = tempfile.mkdtemp(prefix="tailor-tour-")
    os.environ["TAILOR_HOME"] = home
    from PySide6.QtCore import QEventLoop, QSettings, QTimer

    from app.main import make_app
    from app.main_window import MainWindow
    from engine.tiny_models import cached_tiny_model

    if a.dark:
        os.environ["TAILOR_COLOR_SCHEME"] = "dark"
    app = make_app([])
    out = REPO / "test-output" / f"tour-{a.size}{'-dark' if a.dark else ''}"
    out.mkdir(parents=True, exist_ok=True)
    win = MainWindow(QSettings(str(Path(home) / "s.ini"), QSettings.Format.IniFormat),
                     confirm=lambda *_: True, first_run_sample=True)
    win.resize(w, h)
    win.show()

    def wait(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def until(cond, timeout_ms: int = 120000) -> None:
        waited = 0
        while not cond() and waited < timeout_ms:
            wait(50)
            waited += 50

    win.state.set_model(str(cached_tiny_model("qwen2")))
    data = win.pages["Data"]
    until(lambda: data.report is not None)
    train = win.pages["Train"]
    win.show_page("Train")
    train.form.set_values({"iters": a.iters, "batch_size": 2, "learning_rate": 1e-3,
                           "eval_every": 25, "save_every": 50, "max_seq_length": 256})
    train.start()
    until(lambda: train.chart.point_count() >= a.iters // 2 or (train.job and train.job.done))
    win.grab().save(str(out / "train-mid-run.png"))
    until(lambda: train.job.done)
    wait(300)
    win.grab().save(str(out / "train-finished.png"))
    for name in ("Model", "Data", "Library", "Playground", "Export"):
        win.show_page(name)
        if name == "Playground":
            play = win.pages["Playground"]
            play.refresh_adapters()
            play.select_adapter(train.run_name)
            play.side_by_side.setChecked(True)
            play.max_tokens.setValue(24)
            play.prompt.setPlainText("What comes before three?")
            play.send()
            until(lambda: not play.busy())
        wait(300)
        win.grab().save(str(out / f"{name.lower()}.png"))
    print(json.dumps({"out": str(out), "state": train.job.state}))
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
