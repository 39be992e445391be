"""Model: choose the base model (a local folder, or a Hugging Face repo id from a short list of
small instruct models that fit a Mac), download it with progress and cancel, and see its
architecture, parameters, memory needed and whether GGUF export supports it."""
from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import (QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QListWidget, QListWidgetItem, QProgressBar, QPushButton,
                               QVBoxLayout, QWidget)

from .. import commands
from ..estimate import estimate, human_bytes, human_count, read_model_config
from ..job_binding import bind_job
from ..widgets import Banner, error_html, page_header

# Small instruct models that train on a 16 GB Mac; the 4-bit MLX builds train as QLoRA.
CURATED = [
    ("mlx-community/Qwen2.5-0.5B-Instruct-4bit", "Qwen2.5 0.5B, 4-bit · ~0.3 GB · fastest"),
    ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5 0.5B · ~1 GB"),
    ("mlx-community/Llama-3.2-1B-Instruct-4bit", "Llama 3.2 1B, 4-bit · ~0.7 GB"),
    ("HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2 360M (Llama) · ~0.7 GB"),
    ("Qwen/Qwen3-0.6B", "Qwen3 0.6B · ~1.2 GB"),
    ("mlx-community/gemma-3-1b-it-4bit", "Gemma 3 1B, 4-bit · ~0.8 GB"),
    ("mlx-community/Phi-3-mini-4k-instruct-4bit", "Phi-3 mini 3.8B, 4-bit · ~2.2 GB"),
]

DOWNLOAD_PLAIN = "the Hugging Face Hub could not be reached, or the download stopped"
DOWNLOAD_HINT = ("check the internet connection (and any proxy), then press Download again: "
                 "what was fetched is kept and the download resumes")

# the exporter's own table (engine/capabilities.py: Qt-free and MLX-free at import)
from engine.capabilities import gguf_support  # noqa: E402
from engine.results import ModelDownload  # noqa: E402


def describe_model(folder: Path) -> dict[str, str]:
    """What the page shows about a local model folder (pure file reading, no MLX)."""
    cfg = read_model_config(folder)
    if not cfg:
        return {"error": f"{folder} has no readable config.json: not a Hugging Face model "
                         "folder"}
    arch = cfg.get("model_type", "?")
    est = estimate(cfg, {"method": "lora", "rank": 16, "batch_size": 4, "max_seq_length": 2048})
    bits = (cfg.get("quantization") or {}).get("bits")
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    out = {"architecture": f"{arch} ({', '.join(cfg.get('architectures', []))})",
           "quantization": f"{bits}-bit (trains as QLoRA)" if bits else "full precision",
           "gguf": "yes" if gguf_support(cfg)[0] else
                   f"no: {gguf_support(cfg)[1]} (training still works)"}
    if est:
        out["parameters"] = human_count(est.base_params)
        out["memory"] = (f"about {human_bytes(est.total_bytes)} to train with the defaults "
                         f"(weights {human_bytes(max(weights, est.weights_bytes))})")
    if not any(folder.glob("*.safetensors")):
        out["error"] = "no .safetensors weights in this folder (pickle files are refused)"
    return out


def is_repo_id(model: str) -> bool:
    """``owner/name`` that is not a path on this machine: a Hugging Face id."""
    return (bool(model) and not model.startswith(("/", "~", ".")) and model.count("/") == 1
            and not Path(model).expanduser().exists())


def model_problem(model: str) -> str | None:
    """Why ``model`` cannot be trained on, in one sentence; None for a usable model folder or
    a Hugging Face id (the engine fetches or finds it in the cache)."""
    model = model.strip()
    if not model:
        return "no base model chosen"
    if is_repo_id(model):
        return None
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return f"{model}: no such folder"
    return describe_model(folder).get("error")


class ModelPage(QWidget):
    TITLE = "Model"
    EXPLANATION = ("Choose the base model to fine-tune: a model folder on this Mac, or one of "
                   "these small instruct models (downloaded once, then used offline).")

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.job = None
        self.download_command = commands.model_download_command  # tests give a replay
        self._build()
        state.model_changed.connect(self._show)

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.addWidget(page_header(self.TITLE, self.EXPLANATION))
        row = QHBoxLayout()
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("a model folder, or a Hugging Face id such as "
                                     "mlx-community/Qwen2.5-0.5B-Instruct-4bit")
        self.edit.returnPressed.connect(lambda: self.choose(self.edit.text()))
        row.addWidget(self.edit, 1)
        browse = QPushButton("Choose Folder…")
        browse.clicked.connect(self.browse)
        row.addWidget(browse)
        use = QPushButton("Use")
        use.clicked.connect(lambda: self.choose(self.edit.text()))
        row.addWidget(use)
        lay.addLayout(row)
        self.banner = Banner()
        self.banner.action_clicked.connect(self._on_banner)
        lay.addWidget(self.banner)

        body = QHBoxLayout()
        left = QVBoxLayout()
        left.addWidget(QLabel("<b>Suggested models</b>"))
        self.curated = QListWidget()
        # The id and its size on two lines: one line was cut off at a 1024-wide window.
        self.curated.setWordWrap(True)
        line = self.curated.fontMetrics().lineSpacing()
        for repo, note in CURATED:
            item = QListWidgetItem(f"{repo}\n{note}")
            item.setSizeHint(QSize(0, 2 * line + 12))
            item.setToolTip(f"{repo} — {note}")
            item.setData(Qt.ItemDataRole.UserRole, repo)
            self.curated.addItem(item)
        self.curated.itemDoubleClicked.connect(lambda it: self.choose_repo(
            it.data(Qt.ItemDataRole.UserRole)))
        left.addWidget(self.curated, 1)
        drow = QHBoxLayout()
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self._download_selected)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_download)
        drow.addWidget(self.download_button)
        drow.addWidget(self.cancel_button)
        left.addLayout(drow)
        self.progress = QProgressBar()
        self.progress.hide()
        left.addWidget(self.progress)
        body.addLayout(left, 1)

        right = QVBoxLayout()
        right.addWidget(QLabel("<b>Chosen base model</b>"))
        self.info = QFormLayout()
        self.info_labels: dict[str, QLabel] = {}
        for key, title in (("name", "Model"), ("architecture", "Architecture"),
                           ("parameters", "Parameters"), ("quantization", "Weights"),
                           ("memory", "Memory"), ("gguf", "GGUF export")):
            v = QLabel("–")
            v.setWordWrap(True)
            v.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.info.addRow(title, v)
            self.info_labels[key] = v
        right.addLayout(self.info)
        right.addStretch(1)
        body.addLayout(right, 1)
        lay.addLayout(body, 1)

    def browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if folder:
            self.choose(folder)

    def choose_repo(self, repo: str) -> None:
        self.edit.setText(repo)
        self.choose(repo)

    def choose(self, model: str) -> bool:
        """Use ``model`` if it is a usable model; otherwise say why and keep the one in use
        (an invalid folder never replaces a good one, and is never remembered)."""
        model = str(model).strip()
        problem = model_problem(model)
        if problem is None:
            self.state.set_model(model)
            return True
        keep = self.state.model
        still = (f"<br>Still using {html.escape(Path(keep).name or keep)}." if keep and
                 model_problem(keep) is None else "")
        self.banner.show_message("error", f"Not a usable model: {html.escape(problem)}." + still)
        return False

    def _show(self, model: str) -> None:
        self.edit.setText(model)
        for v in self.info_labels.values():
            v.setText("–")
        self.info_labels["name"].setText(html.escape(model))
        folder = self.state.model_folder
        if folder is None:
            if model and not model.startswith(("/", "~", ".")) and model.count("/") == 1:
                self.banner.show_message(
                    "info", f"{html.escape(model)} is a Hugging Face id: download it once "
                    "(it is kept in the Hugging Face cache).", [("download", "Download")])
            elif model:
                self.banner.show_message("error", f"{html.escape(model)}: no such folder.")
            return
        info = describe_model(folder)
        for key, v in info.items():
            if key in self.info_labels:
                self.info_labels[key].setText(html.escape(v))
        if "error" in info:
            self.banner.show_message("error", html.escape(info["error"]))
        else:
            self.banner.show_message("ok", f"Base model: {html.escape(folder.name)}. Next: "
                                     "the Data page.", [("data", "Go to Data")])

    def _on_banner(self, key: str) -> None:
        if key == "download":
            self.download(self.state.model)
        elif key == "data":
            self.state.page_requested.emit("Data")

    def _download_selected(self) -> None:
        item = self.curated.currentItem()
        repo = item.data(Qt.ItemDataRole.UserRole) if item else self.edit.text().strip()
        if not repo:
            self.banner.show_message("warn", "Nothing to download yet: select one of the "
                                     "suggested models (or type a Hugging Face id such as "
                                     "owner/model above), then press Download.")
        elif not is_repo_id(repo):
            self.banner.show_message("warn", f"{html.escape(repo)} is not a Hugging Face id "
                                     "(owner/model): for a folder on this Mac, press Use.")
        else:
            self.download(repo)

    def download(self, repo: str) -> None:
        """`tailor model download REPO` in a worker, with progress and cancel."""
        self.job = job = self.state.queue.submit(f"Download {repo}",
                                                 self.download_command(repo))
        bind_job(job, lambda result: self._downloaded(repo, result), banner=self.banner,
                 progress=self.progress, disable=[self.download_button],
                 enable=[self.cancel_button], running=f"Downloading {html.escape(repo)}…",
                 cancelled="Download cancelled; what was fetched is kept and resumes next time.",
                 on_failure=lambda message, hint, failed: self._download_failed(
                     repo, message, hint, crashed=failed is None))

    def _download_failed(self, repo: str, message: str, hint: str,
                         crashed: bool = False) -> None:
        # A crash's hint is about training memory; for a download the connection is the news.
        plain = "the download stopped unexpectedly" if crashed else ""
        shown = (error_html(plain, DOWNLOAD_HINT) if plain else
                 error_html(message, hint, plain=DOWNLOAD_PLAIN, plain_hint=DOWNLOAD_HINT))
        self.banner.show_message("error", f"Could not download {html.escape(repo)}: {shown}")
        self.banner.setToolTip(message)  # the exact words, for a bug report

    def _downloaded(self, repo: str, result: ModelDownload | dict | None) -> None:
        """The downloaded folder (the engine's ModelDownload) becomes the model in use."""
        self.state.set_model(ModelDownload.coerce(result).path or repo)

    def cancel_download(self) -> None:
        if self.job is not None and not self.job.done:
            self.state.queue.cancel(self.job)
