"""The Parquet store's schema: one row per frame, versioned.

:class:`FrameRow` is the typed boundary (pydantic validates every row before it is
written); :data:`ARROW_SCHEMA` is the same schema in Arrow types. A test keeps the
two in step. Bump :data:`SCHEMA_VERSION` on any change; readers refuse other versions.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sweep.elements import ELEMENTS

SCHEMA_VERSION = 1

Float = Annotated[float, Field(allow_inf_nan=False)]


class FrameRow(BaseModel):
    """One labelled frame as stored: labels in eV, eV/Å, eV/Å³ (Voigt, ASE sign)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    element: str
    temperature: Literal["cold", "warm", "melt"]
    temperature_K: Float = Field(gt=0)
    split: Literal["train", "test"]
    frame_index: int = Field(ge=0, description="position in the temperature's trajectory (train first)")
    n_atoms: int = Field(gt=0)
    cell: list[Float] = Field(min_length=9, max_length=9)
    pbc: list[bool] = Field(min_length=3, max_length=3)
    numbers: list[int]
    positions: list[Float]
    forces: list[Float]
    energy: Float
    stress: list[Float] = Field(min_length=6, max_length=6)
    source_file: str
    source_frame: int = Field(ge=0)

    @field_validator("element")
    @classmethod
    def _known_element(cls, value: str) -> str:
        if value not in ELEMENTS:
            raise ValueError(f"{value!r} is not a TM23 metal")
        return value

    @model_validator(mode="after")
    def _shapes(self) -> "FrameRow":
        n = self.n_atoms
        if len(self.numbers) != n:
            raise ValueError(f"numbers has {len(self.numbers)} entries for {n} atoms")
        for name in ("positions", "forces"):
            if len(getattr(self, name)) != 3 * n:
                raise ValueError(f"{name} has {len(getattr(self, name))} values for {n} atoms")
        return self


ARROW_SCHEMA = pa.schema(
    [
        pa.field("element", pa.string(), nullable=False),
        pa.field("temperature", pa.string(), nullable=False),
        pa.field("temperature_K", pa.float64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("n_atoms", pa.int32(), nullable=False),
        pa.field("cell", pa.list_(pa.float64(), 9), nullable=False),
        pa.field("pbc", pa.list_(pa.bool_(), 3), nullable=False),
        pa.field("numbers", pa.list_(pa.int16()), nullable=False),
        pa.field("positions", pa.list_(pa.float64()), nullable=False),
        pa.field("forces", pa.list_(pa.float64()), nullable=False),
        pa.field("energy", pa.float64(), nullable=False),
        pa.field("stress", pa.list_(pa.float64(), 6), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_frame", pa.int32(), nullable=False),
    ],
    metadata={b"tm23_sweep_schema_version": str(SCHEMA_VERSION).encode()},
)


def rows_to_table(rows: list[FrameRow]) -> pa.Table:
    """Validated rows to an Arrow table in :data:`ARROW_SCHEMA`."""
    columns = {name: [getattr(r, name) for r in rows] for name in ARROW_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)
