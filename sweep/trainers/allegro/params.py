"""Allegro's hyperparameters, named as ``allegro.model.AllegroModel`` names them (light: no torch).

The two-body MLP is Allegro's scalar embedding MLP (``scalar_embed_mlp_*``), the latent MLP
its per-layer scalar MLP (``allegro_mlp_*``); the radial-chemical embedding is Allegro's
``TwoBodyBesselScalarEmbed``. The cutoff is NequIP's ``r_max`` (the framework's ``cutoff_radius``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sweep.trainers.nequip.config import FrameworkParams


class AllegroParams(FrameworkParams):
    """Allegro hyperparameters; defaults are sized for tiny CPU runs."""

    l_max: int = Field(1, ge=1, le=6, description="maximum rotation order of the tensor features")
    parity: bool = Field(True, description="include odd-parity tensor features")
    num_layers: int = Field(1, ge=1, description="Allegro layers")
    num_scalar_features: int = Field(16, ge=1, description="multiplicity of the scalar (latent) features")
    num_tensor_features: int = Field(4, ge=1, description="multiplicity of the tensor features")
    # two-body radial-chemical embedding (allegro.nn.TwoBodyBesselScalarEmbed)
    num_bessels: int = Field(8, ge=1)
    bessel_trainable: bool = False
    polynomial_cutoff_p: int = Field(6, ge=1)
    # the two-body MLP (scalar embedding) and the latent MLP (in every Allegro layer)
    scalar_embed_mlp_hidden_layers_depth: int = Field(1, ge=0)
    scalar_embed_mlp_hidden_layers_width: int = Field(16, ge=1)
    allegro_mlp_hidden_layers_depth: int = Field(1, ge=0)
    allegro_mlp_hidden_layers_width: int = Field(16, ge=1)
    readout_mlp_hidden_layers_depth: int = Field(1, ge=0)
    readout_mlp_hidden_layers_width: int = Field(8, ge=1)
    tp_path_channel_coupling: bool = True

    def model_block(self) -> dict[str, Any]:
        """``allegro.model.AllegroModel`` with these hyperparameters."""
        return {
            "_target_": "allegro.model.AllegroModel",
            "seed": "${seed}",
            "model_dtype": self.model_dtype,
            "type_names": "${model_type_names}",
            "r_max": "${cutoff_radius}",
            "l_max": self.l_max,
            "parity": self.parity,
            "radial_chemical_embed": {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                                      "num_bessels": self.num_bessels, "bessel_trainable": self.bessel_trainable,
                                      "polynomial_cutoff_p": self.polynomial_cutoff_p},
            "scalar_embed_mlp_hidden_layers_depth": self.scalar_embed_mlp_hidden_layers_depth,
            "scalar_embed_mlp_hidden_layers_width": self.scalar_embed_mlp_hidden_layers_width,
            "num_layers": self.num_layers,
            "num_scalar_features": self.num_scalar_features,
            "num_tensor_features": self.num_tensor_features,
            "allegro_mlp_hidden_layers_depth": self.allegro_mlp_hidden_layers_depth,
            "allegro_mlp_hidden_layers_width": self.allegro_mlp_hidden_layers_width,
            "tp_path_channel_coupling": self.tp_path_channel_coupling,
            "readout_mlp_hidden_layers_depth": self.readout_mlp_hidden_layers_depth,
            "readout_mlp_hidden_layers_width": self.readout_mlp_hidden_layers_width,
            **self.data_statistics(),
        }
