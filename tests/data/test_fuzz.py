"""Arbitrary bytes under any supported extension give a report or a TailorError, never another
exception (and the file is never changed)."""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data import DataConfig, prepare_dataset
from engine.data.readers import FORMATS
from engine.events import TailorError

# Mostly-valid records too, so the fuzzing reaches the schema and rendering code, not only the
# "binary file" check.
_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.sampled_from(["role", "content", "messages", "text",
                                                          "prompt", "completion", "from",
                                                          "value", "conversations", "x"]),
                                         inner, max_size=4), max_leaves=12)
_MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "x"]),
                                  "content": st.text(max_size=20)})
_CHAT = st.builds(lambda ms: {"messages": ms}, st.lists(_MESSAGE, max_size=4))
_LINE = st.one_of(_VALUES, _CHAT).map(lambda v: json.dumps(v).encode())
_TEXTISH = st.lists(_LINE | st.binary(max_size=40), max_size=8).map(b"\n".join)
_CSVISH = st.lists(st.lists(st.text(max_size=10), min_size=1, max_size=3).map(
    lambda cells: ",".join(cells)), max_size=6).map(
    lambda rows: ("prompt,completion\n" + "\n".join(rows)).encode("utf-8", "surrogatepass"))
_ENCODED = st.tuples(_TEXTISH, st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])
                     ).map(lambda t: t[1] + t[0])
DATA = st.one_of(st.binary(max_size=300), _TEXTISH, _CSVISH, _ENCODED)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=DATA, ext=st.sampled_from(sorted(FORMATS)), strict=st.booleans())
def test_arbitrary_bytes_never_crash(tmp_path, tokenizer, data, ext, strict):
    path = tmp_path / f"fuzz{ext}"
    path.write_bytes(data)
    try:
        prepared = prepare_dataset(path, tokenizer("qwen2"),
                                   DataConfig(strict=strict, preview_count=1))
    except TailorError as e:
        assert str(e).strip()
    else:
        assert prepared.train and prepared.report.format_text()
        assert all(len(e.tokens) == len(e.loss_mask) and any(e.loss_mask)
                   for e in prepared.train + prepared.valid)
    assert path.read_bytes() == data
