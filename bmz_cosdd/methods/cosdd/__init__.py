"""COSDD (Salmon & Krull, WACV 2025): correlated and signal-dependent noise removal."""

from bmz_cosdd.methods.cosdd.config import PRESETS, COSDDConfig
from bmz_cosdd.methods.cosdd.method import COSDD
from bmz_cosdd.methods.cosdd.model import COSDDModel
from bmz_cosdd.methods.registry import register

register(COSDD())

__all__ = ["COSDD", "COSDDConfig", "COSDDModel", "PRESETS"]
