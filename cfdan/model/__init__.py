"""The CF-DAN model (§3): one module per mechanism.

- :mod:`.config`        -- :class:`CFDANConfig`, ablation presets (Tables 3-5, Figs. 7, 10)
- :mod:`.trunk`         -- ResNet-18 trunk, user checkpoints (§3)
- :mod:`.attention`     -- spatial-group (eq. 1) and channel-group (eq. 2) attention
- :mod:`.distillation`  -- self-attention distillation (eqs. 4-5)
- :mod:`.cross_fusion`  -- two-layer cross-fusion dual attention (eq. 3)
- :mod:`.ilm`           -- interactive learning mechanism (eqs. 13-16)
- :mod:`.network`       -- :class:`CFDAN`
- :mod:`.cost`          -- parameter and FLOP counts (Tables 2, 5)
"""

from .config import PRESETS, CFDANConfig, preset
from .network import CFDAN

__all__ = ["CFDAN", "CFDANConfig", "PRESETS", "preset"]
