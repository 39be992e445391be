"""The window: a sidebar of pages (Model, Data, Train, Library, Playground, Export), the menu
bar, drops anywhere, window state kept in QSettings, and a question before quitting mid-run."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QByteArray, QSettings, QSize, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QIcon, QKeySequence, QPalette, QPixmap
from PySide6.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QPushButton,
                               QLineEdit, QListWidget, QListWidgetItem, QMainWindow,
                               QMessageBox, QStackedWidget, QWidget)

from engine import __version__
from engine.paths import RESOURCES

from .pages.data import DataPage
from .pages.export import ExportPage
from .pages.library import LibraryPage
from .pages.model import ModelPage
from .pages.playground import PlaygroundPage
from .pages.train import TrainPage
from .state import AppState
from .widgets import ask, mix

PAGES = ("Model", "Data", "Train", "Library", "Playground", "Export")
ICONS = RESOURCES / "icons"
SAMPLES = RESOURCES / "samples"
README = RESOURCES.parent / "README.md"
DATA_SUFFIXES = {".jsonl", ".json", ".csv", ".tsv", ".txt"}


def icon(name: str) -> QIcon:
    p = ICONS / f"{name.lower()}.svg"
    return QIcon(str(p)) if p.exists() else QIcon()


ICON_STROKE = 'stroke="#6b7280"'  # the icons' line colour, replaced by the palette's


def sidebar_icon(name: str, palette: QPalette, size: int = 22) -> QIcon:
    """A page icon drawn in the palette's text colour, and in its highlighted-text colour
    when selected, so it stands out in light and dark mode (the grey lines did not)."""
    p = ICONS / f"{name.lower()}.svg"
    if not p.exists():
        return QIcon()
    svg = p.read_text(encoding="utf-8")
    out = QIcon()
    for mode, role in ((QIcon.Mode.Normal, QPalette.ColorRole.WindowText),
                       (QIcon.Mode.Selected, QPalette.ColorRole.HighlightedText)):
        data = svg.replace(ICON_STROKE, f'stroke="{palette.color(role).name()}"').encode()
        for scale in (1, 2):
            pm = QPixmap()
            pm.loadFromData(data, "SVG")
            pm = pm.scaled(size * scale, size * scale, Qt.AspectRatioMode.KeepAspectRatio,
                           Qt.TransformationMode.SmoothTransformation)
            out.addPixmap(pm, mode)
    return out


def classify_drop(paths: list[Path]) -> tuple[str, Path] | None:
    """What a drop means: ("model", folder) for a folder with config.json, else ("data", path)
    for a dataset file or folder; None for nothing usable."""
    for p in paths:
        if p.is_dir() and (p / "config.json").exists():
            return "model", p
    for p in paths:
        if p.is_dir() or p.suffix.lower() in DATA_SUFFIXES:
            return "data", p
    return ("data", paths[0]) if paths else None


def sample_dataset() -> Path | None:
    """The bundled first-run dataset, if the resources hold one."""
    if not SAMPLES.is_dir():
        return None
    found = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in DATA_SUFFIXES)
    return found[0] if found else None


def apply_library_folder_now(new: str, old: str) -> str:
    """Point this app and its next workers at the library folder ``new`` (what app/main.py
    does at start), unless $TAILOR_HOME came from the environment: that one wins. Returns
    a sentence for the status bar."""
    env = os.environ.get("TAILOR_HOME", "")
    if env and env != old:
        return f"TAILOR_HOME is set ({env}): it wins over Preferences until it is unset."
    if new:
        Path(new).expanduser().mkdir(parents=True, exist_ok=True)
        os.environ["TAILOR_HOME"] = str(Path(new).expanduser())
        return f"Library folder: {new}"
    os.environ.pop("TAILOR_HOME", None)
    return "Library folder: the default"


class PreferencesDialog(QDialog):
    def __init__(self, settings: QSettings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.settings = settings
        form = QFormLayout(self)
        self.library = QLineEdit(str(settings.value("library/folder", "") or ""))
        self.library.setPlaceholderText(os.environ.get("TAILOR_HOME", "the default folder"))
        self.library.setToolTip("where adapters, runs and exports are kept (applies at once; "
                                "a running job finishes where it started)")
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._choose_library)
        row = QHBoxLayout()
        row.addWidget(self.library, 1)
        row.addWidget(choose)
        form.addRow("Library folder", row)
        self.applied = ""  # what accept() did, for the status bar
        self.host = QLineEdit(str(settings.value("ollama/host", "") or ""))
        self.host.setPlaceholderText("127.0.0.1:11434")
        form.addRow("Ollama host", self.host)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok |
                                   QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _choose_library(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the library folder",
                                                  self.library.text().strip())
        if folder:
            self.library.setText(folder)

    def accept(self) -> None:
        old = str(self.settings.value("library/folder", "") or "")
        new = self.library.text().strip()
        self.settings.setValue("library/folder", new)
        self.settings.setValue("ollama/host", self.host.text().strip())  # read at each use
        if new != old:
            self.applied = apply_library_folder_now(new, old)
        super().accept()


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, state: AppState | None = None,
                 confirm: Callable[[str, str, str], bool] | None = None, first_run_sample: bool = True):
        super().__init__()
        self.settings = settings or QSettings()
        self.state = state or AppState(parent=self)
        self.confirm = confirm or self._confirm_dialog
        self.opener: Callable[[QUrl], object] = QDesktopServices.openUrl  # tests record it
        self._quitting = False
        self.setWindowTitle("Tailor")
        self.setWindowIcon(icon("tailor"))
        self.setAcceptDrops(True)
        self.setMinimumSize(QSize(1000, 640))

        self.sidebar = QListWidget()
        self.sidebar.setIconSize(QSize(22, 22))
        self.sidebar.setFixedWidth(168)
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFrameShape(QListWidget.Shape.NoFrame)
        self.stack = QStackedWidget()
        self.pages: dict[str, QWidget] = {
            "Model": ModelPage(self.state),
            "Data": DataPage(self.state),
            "Train": TrainPage(self.state, settings=self.settings),
            "Library": LibraryPage(self.state, confirm=self.confirm),
            "Playground": PlaygroundPage(self.state),
            "Export": ExportPage(self.state, settings=self.settings, confirm=self.confirm),
        }
        for name in PAGES:
            item = QListWidgetItem(sidebar_icon(name, self.palette()), name)
            item.setSizeHint(QSize(150, 40))
            self.sidebar.addItem(item)
            page = self.pages[name]
            page.layout().setContentsMargins(18, 14, 18, 14)
            self.stack.addWidget(page)
        self.sidebar.currentRowChanged.connect(self.stack.setCurrentIndex)
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self.sidebar)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.job_label = QLabel("Idle")
        self.statusBar().addPermanentWidget(self.job_label)
        self.state.queue.changed.connect(
            lambda: self.job_label.setText(self.state.queue.describe()))
        self.state.page_requested.connect(self.show_page)
        self.state.adapter_requested.connect(self._on_adapter_request)
        self.state.model_changed.connect(lambda m: self.settings.setValue("model/last", m))
        self._build_menus()
        self._restore(first_run_sample)

    def changeEvent(self, ev) -> None:
        super().changeEvent(ev)
        if ev.type() == ev.Type.PaletteChange and hasattr(self, "sidebar"):
            for i, name in enumerate(PAGES):  # dark mode switched: redraw the icons
                self.sidebar.item(i).setIcon(sidebar_icon(name, self.palette()))

    # -- pages -------------------------------------------------------------------------------

    def show_page(self, name: str) -> None:
        self.sidebar.setCurrentRow(PAGES.index(name))

    def current_page(self) -> str:
        return PAGES[self.stack.currentIndex()]

    def _on_adapter_request(self, action: str, name: str) -> None:
        if action == "try":
            self.pages["Playground"].select_adapter(name)
            self.show_page("Playground")
        elif action == "export":
            self.pages["Export"].select_adapter(name)
            self.show_page("Export")
        elif action == "resume":
            self.show_page("Train")
            self.pages["Train"].resume(name)

    # -- menus -------------------------------------------------------------------------------

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "Open Dataset…", QKeySequence.StandardKey.Open,
                     self.pages["Data"].open_dialog)
        self._action(file_menu, "Choose Model Folder…", "Ctrl+Shift+O",
                     self.pages["Model"].browse)
        file_menu.addSeparator()
        self._action(file_menu, "Quit", QKeySequence.StandardKey.Quit, self.close,
                     role=QAction.MenuRole.QuitRole)
        # A Mac moves Preferences and About into the application menu: Edit and Help keep
        # their standard items so they are never empty there.
        edit = bar.addMenu("&Edit")
        S = QKeySequence.StandardKey
        for item in (("Undo", S.Undo, "undo"), ("Redo", S.Redo, "redo"), None,
                     ("Cut", S.Cut, "cut"), ("Copy", S.Copy, "copy"), ("Paste", S.Paste, "paste"),
                     ("Select All", S.SelectAll, "selectAll")):
            if item is None:
                edit.addSeparator()
                continue
            text, key, method = item
            self._action(edit, text, key, lambda m=method: self.edit_focused(m))
        edit.addSeparator()
        self._action(edit, "Preferences…", QKeySequence.StandardKey.Preferences,
                     self.preferences, role=QAction.MenuRole.PreferencesRole)
        run = bar.addMenu("&Run")
        self._action(run, "Start Training", "Ctrl+R", self.pages["Train"].start)
        self._action(run, "Stop", "Ctrl+.", self.pages["Train"].stop)
        window = bar.addMenu("&Window")
        self._action(window, "Minimize", "Ctrl+M", self.showMinimized)
        self._action(window, "Zoom", None, lambda: self.showNormal() if self.isMaximized()
                     else self.showMaximized())
        window.addSeparator()
        for i, name in enumerate(PAGES, 1):
            self._action(window, name, f"Ctrl+{i}", lambda n=name: self.show_page(n))
        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "Tailor Quick Start", QKeySequence.StandardKey.HelpContents,
                     self.open_help)
        self._action(help_menu, "About Tailor", None, self.about,
                     role=QAction.MenuRole.AboutRole)

    def edit_focused(self, method: str) -> bool:
        """Undo, Cut, Copy, Paste or Select All in the focused text field (False: none)."""
        widget = QApplication.focusWidget()
        action = getattr(widget, method, None)
        if callable(action):
            action()
            return True
        return False

    def help_url(self) -> QUrl | None:
        """The README's quick start (None when this build carries no README)."""
        if not README.exists():
            return None
        url = QUrl.fromLocalFile(str(README))
        url.setFragment("quick-start-on-a-mac-apple-silicon")
        return url

    def open_help(self) -> None:
        url = self.help_url()
        if url is None:
            self.statusBar().showMessage("This build has no README: choose a model (Model), "
                                         "drop a dataset (Data), press Start (Train).", 15000)
        else:
            self.opener(url)

    def _action(self, menu, text, shortcut, slot, role=None) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        if role is not None:
            a.setMenuRole(role)
        a.triggered.connect(lambda *_: slot())
        menu.addAction(a)
        return a

    def preferences(self) -> None:
        dialog = PreferencesDialog(self.settings, self)
        if dialog.exec() and dialog.applied:
            self.preferences_applied(dialog.applied)

    def preferences_applied(self, message: str) -> None:
        self.statusBar().showMessage(message, 10000)
        self.state.library_changed.emit()  # every page re-reads the (new) library

    def about(self) -> None:
        QMessageBox.about(self, "About Tailor",
                          f"<h3>Tailor {__version__}</h3><p>Fine-tune language models on your "
                          "Mac with LoRA (MLX), keep the adapters, export GGUF and run them in "
                          "Ollama.</p><p>Open source, MIT licence.</p>")

    # -- drops -------------------------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
            self._show_drop_hint(True)
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragLeaveEvent(self, event) -> None:
        self._show_drop_hint(False)

    def _show_drop_hint(self, on: bool) -> None:
        """A visible frame while files are dragged over the window: the drop is welcome."""
        hint = getattr(self, "drop_hint", None)
        if hint is None:
            hint = self.drop_hint = QLabel("Drop a dataset file or a model folder to open it",
                                           self.centralWidget())
            hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
            hint.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        pal = self.palette()
        accent = pal.color(QPalette.ColorRole.Highlight)
        tint = mix(pal.color(QPalette.ColorRole.Window), accent, 0.12)
        hint.setStyleSheet(f"QLabel {{ border: 3px dashed {accent.name()}; border-radius: 10px;"
                           f" background: {tint.name()}; color: "
                           f"{pal.color(QPalette.ColorRole.WindowText).name()}; "
                           "font-size: 18px; }")
        hint.setGeometry(self.centralWidget().rect().adjusted(8, 8, -8, -8))
        hint.setVisible(on)
        if on:
            hint.raise_()

    def dropEvent(self, event) -> None:
        self._show_drop_hint(False)
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if self.open_paths(paths):
            event.acceptProposedAction()
        else:
            event.ignore()

    def open_paths(self, paths: list[Path]) -> bool:
        """A dataset or model folder dropped on the window or, on a Mac, on the Dock icon
        (app/main.py's FileOpenFilter); False when it is neither."""
        what = classify_drop(paths)
        if what is None:
            return False
        kind, path = what
        if kind == "model":
            self.show_page("Model")
            self.pages["Model"].choose(str(path))  # refused, with the reason, if unusable
        else:
            self.show_page("Data")
            self.state.set_data(str(path))
        return True

    # -- state -------------------------------------------------------------------------------

    def _restore(self, first_run_sample: bool) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        page = str(self.settings.value("window/page", "Model"))
        self.show_page(page if page in PAGES else "Model")
        model = str(self.settings.value("model/last", "") or "")
        if model:
            self.state.set_model(model)
        first = not self.settings.value("app/first_run_done", False, type=bool)
        sample = sample_dataset()
        if first and first_run_sample and sample is not None:
            self.state.set_data(str(sample))
            self.statusBar().showMessage("Welcome! A sample dataset is loaded: choose a base "
                                         "model, then press Start on the Train page.", 15000)
        self.settings.setValue("app/first_run_done", True)

    def save_state(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/page", self.current_page())
        self.settings.sync()

    def closeEvent(self, event) -> None:
        queue = self.state.queue
        if queue.busy and not self._quitting:
            if not self.confirm("Quit Tailor?",
                                "A job is still running. Stop it and quit? A training run "
                                "saves a checkpoint first, so you can resume it later.",
                                "Stop and Quit"):
                event.ignore()
                return
            self._quitting = True
            queue.stop_all()
            self.statusBar().showMessage("Stopping the running job before quitting…")
            queue.changed.connect(lambda: (not queue.busy) and QTimer.singleShot(0, self.close))
            event.ignore()
            return
        self.save_state()
        event.accept()

    def _confirm_dialog(self, title: str, text: str, verb: str) -> bool:
        return ask(self, title, text, verb)
