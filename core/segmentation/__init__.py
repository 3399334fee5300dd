"""Airway segmentation with a trained network (method.md section 7): one route from a CT to a checked mask.

- :mod:`~core.segmentation.grid`: where windows go (the paper's grid, window weights, selection by a region);
- :mod:`~core.segmentation.selection`: region providers (lungs and trachea, a coarse pass, any mask);
- :mod:`~core.segmentation.loop`: the one sliding-window loop, for numpy arrays and device tensors alike;
- :mod:`~core.segmentation.runner`: batches through an engine, CUDA out-of-memory handling;
- :mod:`~core.segmentation.backends`: the engines (PyTorch, OpenVINO, ONNX Runtime) and their export cache;
- :mod:`~core.segmentation.inputs`: CT checks, the fast lung crop, the network input;
- :mod:`~core.segmentation.postprocess`: threshold, largest component, uint8 probabilities;
- :mod:`~core.segmentation.options`: :class:`PredictOptions`, the inference modes, device and batch size;
- :mod:`~core.segmentation.predictor`: :class:`Predictor` and its :class:`Prediction`;
- :mod:`~core.segmentation.route`: :func:`segment_and_gate`, called by the CLI, the app's child process
  and its in-process fallback.

Only this package imports torch for inference, and only when a predictor is built or a tensor passed.
"""

from core.segmentation.grid import (
    axis_normaliser,
    gaussian_1d,
    select_windows,
    window_slices,
    window_starts,
)
from core.segmentation.inputs import check_ct, fast_crop_box, prepare
from core.segmentation.loop import sliding_window
from core.segmentation.options import (
    INFERENCE_MODES,
    PredictOptions,
    default_batch_size,
    default_mode,
    mode_settings,
    recommended_spacing,
    recommended_window,
    resolve_device,
)
from core.segmentation.postprocess import PostProcessing, quantise
from core.segmentation.predictor import Prediction, Predictor, load_checkpoint
from core.segmentation.route import GatedPrediction, segment_and_gate
from core.segmentation.runner import BatchRunner
from core.segmentation.selection import (
    REGIONS,
    CoarseModelRegion,
    LungRegion,
    MaskRegion,
    RegionProvider,
    RegionRequest,
    region_provider,
)

__all__ = [
    "INFERENCE_MODES",
    "REGIONS",
    "BatchRunner",
    "CoarseModelRegion",
    "GatedPrediction",
    "LungRegion",
    "MaskRegion",
    "PostProcessing",
    "PredictOptions",
    "Prediction",
    "Predictor",
    "RegionProvider",
    "RegionRequest",
    "axis_normaliser",
    "check_ct",
    "default_batch_size",
    "default_mode",
    "fast_crop_box",
    "gaussian_1d",
    "load_checkpoint",
    "mode_settings",
    "prepare",
    "quantise",
    "recommended_spacing",
    "recommended_window",
    "region_provider",
    "resolve_device",
    "segment_and_gate",
    "select_windows",
    "sliding_window",
    "window_slices",
    "window_starts",
]
