"""Neural networks of BMD-GAN: decomposition generator G = {M_E, M_D}, multi-scale discriminators, and the
stage-3 regressor R = {M_E, M_R} (paper Sec. 3.2-3.3). GroupNorm everywhere except LayerNorm in the
Transformer parts (Sec. 4.2.7)."""

from .checkpoint_compat import CheckpointMismatchError, load_state_dict_checked
from .coatnet import CoAtNetHead, RelativeAttention, RelTransformerBlock
from .decoder import Pix2PixHDDecoder
from .discriminator import MultiscaleDiscriminator, NLayerDiscriminator
from .generator import (
    BackboneSpec,
    DecompositionGenerator,
    available_backbones,
    backbone_spec,
    build_generator,
    register_backbone,
)
from .hrformer import (
    HRFORMER_CONFIGS,
    HRFormerBlock,
    HRFormerClassifier,
    HRFormerConfig,
    LocalWindowAttention,
    count_parameters,
    hrformer_backbone,
)
from .hrnet import (
    HRNET_W18_SMALL_V2,
    HighResolutionBackbone,
    HighResolutionConfig,
    HighResolutionEncoder,
    hrnet_backbone,
)
from .norm import group_norm
from .regressor import REGRESSION_HEADS, BMDRegressor, build_regressor
from .relpos import RelativePositionBias, relative_position_index
from .resnet_generator import ResNetEncoder

__all__ = [
    "BMDRegressor",
    "BackboneSpec",
    "CheckpointMismatchError",
    "CoAtNetHead",
    "DecompositionGenerator",
    "HRFORMER_CONFIGS",
    "HRFormerBlock",
    "HRFormerClassifier",
    "HRFormerConfig",
    "HRNET_W18_SMALL_V2",
    "HighResolutionBackbone",
    "HighResolutionConfig",
    "HighResolutionEncoder",
    "LocalWindowAttention",
    "MultiscaleDiscriminator",
    "NLayerDiscriminator",
    "Pix2PixHDDecoder",
    "REGRESSION_HEADS",
    "RelTransformerBlock",
    "RelativeAttention",
    "RelativePositionBias",
    "ResNetEncoder",
    "available_backbones",
    "backbone_spec",
    "build_generator",
    "build_regressor",
    "count_parameters",
    "group_norm",
    "hrformer_backbone",
    "hrnet_backbone",
    "load_state_dict_checked",
    "register_backbone",
    "relative_position_index",
]
