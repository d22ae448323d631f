"""CAM-Net: the frozen multimodal de-corruption network that turns one masked input into many views.

``CAMNet``/``CAMNetConfig`` are the model (``model.py``), ``load_camnet`` loads a checkpoint frozen for
inference (``checkpoint.py``), and ``python -m corruption_env.camnet.pretrain`` trains one with
conditional IMLE (``pretrain.py``). Weights for the ``shapes`` dataset ship in ``weights/``.
"""
from corruption_env.camnet.checkpoint import load_camnet, save_camnet, shipped_checkpoint
from corruption_env.camnet.model import CAMNet, CAMNetConfig

__all__ = ["CAMNet", "CAMNetConfig", "load_camnet", "save_camnet", "shipped_checkpoint"]
