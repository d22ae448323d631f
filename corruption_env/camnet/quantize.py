"""int8 CAM-Net: post-training static quantisation of the frozen generator, for CPUs without bf16 units.

CAM-Net never trains inside the environment, so its convolutions (about 80 % of its fp32 time) can run in
int8 with PyTorch's own x86 backend (``torch.ao.quantization``, FX graph mode). Each level of the
cascade is traced and quantised on its own (the cascade's forward cuts codes into per-level chunks and
picks resizes by shape, which FX cannot trace), then calibrated by running the whole cascade once on
``CALIBRATION_IMAGES`` training images at seeded indices, corrupted as CAM-Net was trained (half
Bernoulli, half CowMask masks, ``random_training_masks``) and restored with seeded latent codes: min/max
observers, so the same weights and images always give the same int8 model. Weights are 7-bit (per
output channel) and activations 8-bit: on a CPU without VNNI (AVX2) a pair of u8 x s8 products must fit
in int16, and 7-bit weights keep it there with a tenth of the error of PyTorch's default (7-bit
activations). The mapping networks, their per-block affines and the AdaIN :class:`Modulation`
stay fp32 (tiny, and instance norm is slow in int8). :func:`quantize_camnet` caches its result per
process, keyed by the weights and the calibration images, so every environment in a process shares one.
What int8 does to the model card is measured by ``studies/camnet_quantize.py``.
"""
from __future__ import annotations

import copy
import hashlib
import warnings

import numpy as np
import torch

from corruption_env.camnet.model import CAMNet, CAMNetConfig, Modulation, fold_weight_norm
from corruption_env.corruption import apply_mask, degrade, random_training_masks

CALIBRATION_IMAGES = 256
CALIBRATION_SEED = 0
BACKEND = "x86"
FP32_MODULES = ("mapping", "affines")  # per-level submodules left in fp32, with every Modulation
_CACHE: dict[str, "Int8CAMNet"] = {}


class Int8CAMNet(CAMNet):
    """A CAM-Net whose levels run int8; made by :func:`quantize_camnet`, CPU only, inference only.

    It runs as it is under a bf16 autocast region: int8 takes bf16's place for CAM-Net, and the
    callers' ``precision`` still applies to everything else.
    """

    def forward(self, x_c: torch.Tensor, pixel_mask: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x_c.device.type, enabled=False):
            return super().forward(x_c, pixel_mask, code)


def quantize_camnet(model: CAMNet, images: torch.Tensor | np.ndarray, mask_grid: int = 4) -> Int8CAMNet:
    """The int8 version of a frozen fp32 CAM-Net, calibrated on ``images`` (cached per process).

    :param model: a CAM-Net on the CPU (e.g. from ``load_camnet``; weight norm is folded if it is not yet).
    :param images: uint8 RGB training images (N, 3, image_size, image_size); ``CALIBRATION_IMAGES`` of
        them at seeded indices (all of them if fewer) calibrate the activation ranges.
    :param mask_grid: side of the cell grid of the calibration masks (the environment's ``mask_grid``).
    :raises ValueError: the model is not on the CPU, this PyTorch has no x86 int8 backend (or no
        ``torch.ao.quantization``), or the images do not fit the model.
    """
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"the int8 CAM-Net runs on the CPU only, but the model is on {device}; use device 'cpu' "
                         "or set camnet_quantize False (on a GPU, precision 'bf16' is the fast path)")
    if BACKEND not in torch.backends.quantized.supported_engines:
        raise ValueError(f"the int8 CAM-Net needs PyTorch's {BACKEND!r} quantized engine, and this machine offers "
                         f"{', '.join(torch.backends.quantized.supported_engines)}; set camnet_quantize False")
    images = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    size = model.cfg.image_size
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3 or images.shape[2:] != (size, size):
        raise ValueError(f"calibration images must be uint8 RGB shaped (N, 3, {size}, {size}) like the CAM-Net's "
                         f"outputs, got {images.dtype} {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("quantize_camnet needs at least one calibration image")
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    chosen = torch.randperm(images.shape[0], generator=generator)[:CALIBRATION_IMAGES]
    calibration = torch.from_numpy(images[chosen.numpy()])  # a copy of the chosen images only
    weights = fold_weight_norm(copy.deepcopy(model)).state_dict()
    digest = hashlib.sha256(repr((model.cfg.to_dict(), mask_grid)).encode())  # all the int8 model depends on
    for name, tensor in weights.items():
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    digest.update(calibration.numpy().tobytes())
    key = digest.hexdigest()
    if key not in _CACHE:
        _CACHE[key] = _quantize(model.cfg, weights, calibration, mask_grid, generator)
    return _CACHE[key]


def _quantize(cfg: CAMNetConfig, weights: dict[str, torch.Tensor], calibration: torch.Tensor, mask_grid: int,
              generator: torch.Generator) -> Int8CAMNet:
    try:  # deprecated since torch 2.10 (for torchao), still in 2.14
        from torch.ao.quantization import QConfig, get_default_qconfig_mapping
        from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
        from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError:
        raise ValueError(f"the int8 CAM-Net needs torch.ao.quantization, which torch {torch.__version__} no longer "
                         "has; set camnet_quantize False") from None
    torch.backends.quantized.engine = BACKEND
    int8 = fold_weight_norm(Int8CAMNet(cfg))
    int8.load_state_dict(weights)
    int8.requires_grad_(False).eval()
    targets = calibration.float() / 255.0
    masks = random_training_masks(targets.shape[0], mask_grid, generator)
    x_c, pixel_mask = apply_mask(degrade(targets, cfg.scale, cfg.task), masks)
    code = int8.sample_code(targets.shape[0], generator)

    level_inputs: dict[int, tuple] = {}
    hooks = [level.register_forward_pre_hook(lambda _, args, i=i: level_inputs.setdefault(i, args))
             for i, level in enumerate(int8.levels)]
    with torch.no_grad():
        int8(x_c[:2], pixel_mask[:2], code[:2])  # each level's example inputs, for tracing
    for hook in hooks:
        hook.remove()
    qconfig = QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=False),
                      weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                                quant_min=-64, quant_max=63))  # 7-bit: see above
    mapping = get_default_qconfig_mapping(BACKEND).set_global(qconfig).set_object_type(Modulation, None)
    for name in FP32_MODULES:
        mapping = mapping.set_module_name(name, None)
    modulation_as_a_leaf = PrepareCustomConfig().set_non_traceable_module_classes([Modulation])
    with warnings.catch_warnings():  # PyTorch's notices that torch.ao.quantization and quantized tensors are deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor", category=UserWarning)
        for i, level in enumerate(int8.levels):
            int8.levels[i] = prepare_fx(level, mapping, level_inputs[i], prepare_custom_config=modulation_as_a_leaf)
        with torch.no_grad():
            int8(x_c, pixel_mask, code)
        for i, level in enumerate(int8.levels):
            int8.levels[i] = convert_fx(level)
    return int8
