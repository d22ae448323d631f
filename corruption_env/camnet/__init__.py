"""CAM-Net: the frozen multimodal de-corruption network that turns one masked input into many views.

``CAMNet``/``CAMNetConfig`` are the model (``model.py``), ``load_camnet`` loads a checkpoint frozen for
inference (``checkpoint.py``), and ``python -m corruption_env.camnet.pretrain`` trains one with
conditional IMLE (``pretrain.py``), and ``quantize_camnet`` makes the int8 copy that CPUs without bf16
units run (``quantize.py``). Weights for the ``shapes`` dataset ship in ``weights/``.
"""
from corruption_env.camnet.checkpoint import load_camnet, save_camnet, shipped_checkpoint
from corruption_env.camnet.model import CAMNet, CAMNetConfig
from corruption_env.camnet.quantize import Int8CAMNet, quantize_camnet

__all__ = ["CAMNet", "CAMNetConfig", "Int8CAMNet", "load_camnet", "quantize_camnet", "save_camnet", "shipped_checkpoint"]
