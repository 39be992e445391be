"""Read safetensors tensors one at a time (and in row chunks) with plain file reads, so memory
holds only the piece being converted, never the model (no mmap pages pile up in RSS either)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


class RowsFromShape:
    """``rows`` and ``row_elems`` of a tensor reference, from its ``shape``: the readers and the
    writer walk every tensor as rows (a 1-D tensor is one row of all its values)."""

    shape: tuple[int, ...]

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_elems(self) -> int:
        return int(np.prod(self.shape[1:])) if len(self.shape) > 1 else (
            self.shape[0] if len(self.shape) == 1 else 1)


@dataclass
class TensorRef(RowsFromShape):
    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int

    def read(self, row0: int = 0, row1: int | None = None, *,
             keep_f16: bool = False) -> np.ndarray:
        """Rows [row0, row1) as float32 (the whole tensor by default); float16 tensors stay
        float16 (read-only, no copy) with ``keep_f16``, for encoders that convert piece by
        piece in cache instead of through a float32 copy of the rows."""
        if self.dtype not in _DTYPES:
            from ..events import TailorError  # here: encoding worker processes start light

            raise TailorError(f"{self.file}: tensor {self.name} has dtype {self.dtype}, which "
                              "GGUF export does not read (F32, F16, BF16 only)")
        np_dtype = _DTYPES[self.dtype]
        item = np.dtype(np_dtype).itemsize
        if len(self.shape) <= 1:
            row0, row1, per_row = 0, 1, int(np.prod(self.shape)) if self.shape else 1
        else:
            row1 = self.rows if row1 is None else row1
            per_row = self.row_elems
        count = (row1 - row0) * per_row
        with open(self.file, "rb") as f:
            f.seek(self.start + row0 * per_row * item)
            buf = f.read(count * item)
        if len(buf) != count * item:
            from ..events import TailorError

            raise TailorError(f"{self.file} is truncated (tensor {self.name})",
                              hint="download or copy the model again")
        arr = np.frombuffer(buf, dtype=np_dtype)
        if self.dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif keep_f16 and self.dtype == "F16":
            pass
        else:
            arr = arr.astype(np.float32)
        shape = self.shape if len(self.shape) <= 1 else (row1 - row0, *self.shape[1:])
        return arr.reshape(shape)


def list_tensors(folder: Path) -> list[TensorRef]:
    """Every tensor of the model folder's *.safetensors files (headers only)."""
    from ..events import TailorError
    from ..models.folder_files import model_files
    from ..models.safetensors_check import check_weight_files

    files = model_files(folder)
    for s in files.skipped_matching("*.safetensors"):  # a weight file outside is not read
        raise TailorError(f"{Path(folder) / s.name} is not read: {s.reason}",
                          hint="copy the weight file itself into the model folder")
    # Headers checked against the file size and each other (no overlaps), shards against the
    # index: a damaged file is refused by name before a byte of it is converted.
    headers = check_weight_files(files.glob("*.safetensors"),
                                 files.glob("*.safetensors.index.json"))
    refs = []
    for file, header in headers.items():
        for t in header.tensors.values():
            refs.append(TensorRef(t.name, file, t.dtype, t.shape, header.data_start + t.begin,
                                  t.end - t.begin))
    return refs
