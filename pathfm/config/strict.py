"""The base of every config section: unknown keys, and inf/nan in float fields, are refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    # inf/nan are refused in every float field (optim.base_lr=.inf would otherwise train into a NaN loss)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
