"""Where the baselines lived before the `coremax.baselines` package: baseline files saved then name these types."""

from coremax.baselines.base import TargetScaled as _TargetScaled
from coremax.baselines.nmf_svr import NmfSvr
from coremax.baselines.pls import Pls

__all__ = ["NmfSvr", "Pls", "_TargetScaled"]
