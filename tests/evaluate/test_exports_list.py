"""Every export is listed in its adapter's folder (engine/adapter_exports.py), so shipped-file
parity finds a GGUF written to any folder, not only under <TAILOR_HOME>/exports/ and demo/:
before this list, `tailor eval --parity` found no GGUF exported with `--out` elsewhere."""
from __future__ import annotations

import hashlib
import json
import os

from engine.adapter_exports import EXPORTS_FILE, listed_exports, record_export
from engine.cli import main as cli_main
from engine.events import decode_event
from engine.evaluate.parity import exported_ggufs
from engine.export.gguf_export import export_gguf
from engine.library import AdapterInfo, get_adapter, rename_adapter
from tests.evaluate.test_parity import _trained


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _eval_parity(name: str, events) -> object:
    rc = cli_main(["eval", "--adapter", name, "--no-probe", "--limit", "2", "--parity",
                   "--events", str(events)])
    assert rc == 0, events.read_text()[-2000:]
    return [decode_event(line) for line in events.read_text().splitlines()
            if '"finished"' in line][-1].result.parity


def test_a_gguf_exported_to_any_folder_is_found_by_eval_parity(tiny_model, tmp_path,
                                                               capsys):
    info = _trained(tiny_model("qwen2"), tmp_path, "far")
    weights, manifest = _sha(info.weights), _sha(info.path / "manifest.json")
    gguf = tmp_path / "somewhere" / "else" / "far.f16.gguf"
    export_gguf("far", gguf, "f16", verify=False)
    # the export touched neither the weights nor the manifest; it listed the file beside them
    assert (_sha(info.weights), _sha(info.path / "manifest.json")) == (weights, manifest)
    listed = json.loads((info.path / EXPORTS_FILE).read_text())["exports"]
    assert [(e["path"], e["quant"], e["kind"]) for e in listed] == [(str(gguf), "f16",
                                                                     "model")]

    parity = _eval_parity("far", tmp_path / "events.jsonl")
    capsys.readouterr()
    assert [(t.kind, t.path) for t in parity.targets] == [("fused", ""), ("gguf", str(gguf))]
    assert parity.targets[1].quant == "f16"
    assert parity.targets[1].identical == parity.targets[1].total, parity.format_text()

    # the list travels with the folder: a renamed adapter still finds its export
    rename_adapter("far", "near")
    found, _ = exported_ggufs(get_adapter("near"))
    assert found == [gguf]

    # a file that is gone is pruned at read time: parity then says it found none
    gguf.unlink()
    assert listed_exports(get_adapter("near").path) == []
    parity = _eval_parity("near", tmp_path / "events2.jsonl")
    assert [t.kind for t in parity.targets] == ["fused"]
    assert any("no GGUF exported from this adapter was found" in n for n in parity.notes)


def test_a_listed_file_replaced_since_is_not_compared_and_gone_ones_are_dropped(tmp_path,
                                                                              tailor_home):
    folder = tailor_home / "adapters" / "a"
    folder.mkdir(parents=True)
    (folder / "adapters.safetensors").write_bytes(b"x")
    kept, replaced, gone = (tmp_path / f"{n}.gguf" for n in ("kept", "replaced", "gone"))
    for f in (kept, replaced, gone):
        f.write_bytes(b"GGUF")
        record_export(folder, f, quant="q8_0", kind="model")
    replaced.write_bytes(b"GGUF, another export to the same path")
    gone.unlink()
    found, notes = exported_ggufs(AdapterInfo("a", folder, {}))
    assert found == [kept]
    assert notes == [f"{replaced}: replaced since it was exported from this adapter; "
                     "not compared"]
    record_export(folder, kept, quant="f16", kind="model")  # the same path: one entry
    entries = json.loads((folder / EXPORTS_FILE).read_text())["exports"]
    assert [(e["path"], e["quant"]) for e in entries] == [(str(replaced), "q8_0"),
                                                          (str(kept), "f16")]
    assert not [n for n in os.listdir(folder) if n.startswith(".")]  # written atomically
