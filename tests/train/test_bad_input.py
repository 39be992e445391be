"""Every refusal says why and leaves what was there untouched."""
from __future__ import annotations

import shutil

import pytest

from engine import library
from engine.events import TailorError
from engine.models import resolve_model
from engine.train.config import make_config
from engine.train.run import train_adapter
from tests.conftest import snapshot_tree

from .conftest import events_of, run_tailor


def _cfg(**kw):
    return make_config(**{"iters": 4, "eval_every": 0, "rank": 4, "batch_size": 2, **kw})


def test_name_in_use_is_never_overwritten(tiny_model, toy_data, tailor_home):
    train_adapter(str(tiny_model("qwen2")), toy_data, "mine", _cfg())
    folder = library.get_adapter("mine").path
    before = snapshot_tree(folder)
    r = run_tailor("train", "--model", str(tiny_model("llama3")), "--data", str(toy_data),
                   "--name", "mine", "--iters", "4", "--quiet", "--events", "-")
    assert r.returncode == 1
    failed = [e for e in events_of(r.stdout) if e["event"] == "failed"][0]
    assert "an adapter named 'mine' already exists" in failed["message"]
    assert "--resume mine" in failed["hint"]
    assert snapshot_tree(folder) == before


@pytest.mark.parametrize("name, why", [("../escape", "path separator"),
                                       ("..", "starts with a dot"),
                                       (".hidden", "starts with a dot")])
def test_path_traversal_name_is_refused(tiny_model, toy_data, tailor_home, name, why):
    before = snapshot_tree(tailor_home)
    r = run_tailor("train", "--model", str(tiny_model("qwen2")), "--data", str(toy_data),
                   "--name", name, "--iters", "2", "--quiet", "--events", "-")
    assert r.returncode == 1
    failed = [e for e in events_of(r.stdout) if e["event"] == "failed"][0]
    assert why in failed["message"]
    assert snapshot_tree(tailor_home) == before
    assert not (tailor_home / "escape").exists()


def test_pickle_only_model_folder_is_refused(tiny_model, toy_data, tmp_path, tailor_home):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_model("qwen2") / "config.json", folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    before = snapshot_tree(folder)
    with pytest.raises(TailorError, match=r"only pickle checkpoints \(pytorch_model.bin\).*"
                                          r"can run arbitrary code"):
        resolve_model(str(folder))
    r = run_tailor("train", "--model", str(folder), "--data", str(toy_data), "--name", "p",
                   "--iters", "2", "--quiet", "--events", "-")
    assert r.returncode == 1
    assert "pickle" in [e for e in events_of(r.stdout) if e["event"] == "failed"][0]["message"]
    assert snapshot_tree(folder) == before
    assert library.list_adapters() == []


@pytest.mark.parametrize("flag, value, message", [
    ("--rank", "0", "rank = 0 is below the minimum 1"),
    ("--learning-rate", "2", "learning_rate = 2.0 is above the maximum 1.0"),
    ("--dropout", "-0.5", "dropout = -0.5 is below the minimum 0.0"),
    ("--val-batches", "0", "val_batches = 0 would validate on nothing"),
])
def test_out_of_range_setting_is_refused(tiny_model, toy_data, tailor_home, flag, value,
                                         message):
    data_before = toy_data.read_bytes()
    r = run_tailor("train", "--model", str(tiny_model("qwen2")), "--data", str(toy_data),
                   "--name", "x", "--iters", "2", flag, value, "--quiet", "--events", "-")
    assert r.returncode == 1
    failed = [e for e in events_of(r.stdout) if e["event"] == "failed"][0]
    assert message in failed["message"]
    assert library.list_adapters() == [] and not (tailor_home / "adapters" / "x").exists()
    assert toy_data.read_bytes() == data_before


def test_mistyped_local_path_is_not_found_never_a_hub_lookup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for given in ["./modls/qwen", "models/qwen-typo", str(tmp_path / "nope"), "~/no-such-model"]:
        with pytest.raises(TailorError, match="model folder not found"):
            resolve_model(given)


def _hf_cache(root, repo_id, source, rev="0123456789abcdef0123456789abcdef01234567"):
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / rev
    shutil.copytree(source, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    return snap


def test_repo_id_is_served_from_the_local_hf_cache(tiny_model, tmp_path, monkeypatch,
                                                    toy_data):
    cache = tmp_path / "hf-cache"
    snap = _hf_cache(cache, "tiny-org/tiny-qwen", tiny_model("qwen2"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))  # read at import time by the hub
    assert resolve_model("tiny-org/tiny-qwen") == snap
    info = train_adapter("tiny-org/tiny-qwen", toy_data, "from-cache", _cfg())
    base = info.manifest["base_model"]
    assert base["repo_id"] == "tiny-org/tiny-qwen"
    assert base["revision"] == "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(TailorError, match="not in the local Hugging Face cache"):
        resolve_model("tiny-org/absent")


def test_local_folder_resolves_to_itself(tiny_model):
    assert resolve_model(str(tiny_model("llama2"))) == tiny_model("llama2").resolve()


def test_bad_dataset_fails_before_anything_is_created(tiny_model, tmp_path, tailor_home):
    data = tmp_path / "broken.jsonl"
    data.write_bytes(b"")
    r = run_tailor("train", "--model", str(tiny_model("qwen2")), "--data", str(data),
                   "--name", "x", "--iters", "2", "--quiet", "--events", "-")
    assert r.returncode == 1
    failed = [e for e in events_of(r.stdout) if e["event"] == "failed"][0]
    assert "broken.jsonl" in failed["message"]
    assert data.read_bytes() == b"" and library.list_adapters() == []
    r = run_tailor("train", "--model", str(tiny_model("qwen2")), "--data",
                   str(tmp_path / "missing.jsonl"), "--name", "x", "--quiet", "--events", "-")
    assert "dataset not found" in [e for e in events_of(r.stdout)
                                   if e["event"] == "failed"][0]["message"]


def test_download_progress_bar_speaks_huggingface_hubs_tqdm_protocol():
    """The bar class given to snapshot_download, driven the way huggingface_hub drives it."""
    from huggingface_hub.utils.tqdm import _create_progress_bar, hf_thread_map

    from engine.events import CancelToken, Cancelled, ListReporter, Progress
    from engine.models.resolve import progress_bar_class

    rep, cancel = ListReporter(), CancelToken()
    bar_cls = progress_bar_class(rep, cancel, "model")
    bytes_bar = _create_progress_bar(cls=bar_cls, log_level=30, name="x", desc="Downloading",
                                     total=0, initial=0, unit="B", unit_scale=True)
    bytes_bar.total = 300
    assert hf_thread_map(lambda n: bytes_bar.update(n) or n, [100, 100, 100], desc="files",
                         max_workers=1, tqdm_class=bar_cls) == [100, 100, 100]
    done = [e for e in rep.of(Progress) if e.total == 300]
    assert done[-1].done == 300 and done[-1].stage == "download"
    cancel.cancel("stop requested")
    with pytest.raises(Cancelled):
        bytes_bar.update(1)
