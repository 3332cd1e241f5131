"""The Allegro trainer: NequIP's framework trainer with ``allegro.model.AllegroModel`` as the model block."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from sweep.errors import InputError
from sweep.trainers.allegro.params import AllegroParams
from sweep.trainers.base import register_trainer
from sweep.trainers.nequip.trainer import FrameworkTrainer, NequIPModel

#: nequip-allegro 0.8's metadata requires nequip >= 0.18.
MIN_NEQUIP = (0, 18)


def check_framework() -> None:
    """Refuse to train when nequip is older than Allegro needs or Allegro's model is not importable."""
    try:
        found = version("nequip")
    except PackageNotFoundError:
        raise InputError("environment", "nequip", "not installed; Allegro needs nequip >= 0.18") from None
    if tuple(int(part) for part in found.split(".")[:2]) < MIN_NEQUIP:
        raise InputError("environment", "nequip", f"version {found}; Allegro needs nequip >= 0.18")
    try:
        import allegro.model  # noqa: F401
        import allegro.nn  # noqa: F401
    except ImportError as exc:
        raise InputError("environment", "nequip-allegro", f"not importable: {exc}") from None


class AllegroModel(NequIPModel):
    """A trained Allegro model (a NequIP-framework checkpoint)."""

    Params = AllegroParams


@register_trainer
class AllegroTrainer(FrameworkTrainer):
    """Allegro through ``nequip-train``'s own route."""

    name = "allegro"
    Params = AllegroParams
    Model = AllegroModel

    def train(self, params, train_frames, val_frames, reporter, checkpoint_dir, context):
        """Check the framework, then train as NequIP's trainer does."""
        check_framework()
        return super().train(params, train_frames, val_frames, reporter, checkpoint_dir, context)
