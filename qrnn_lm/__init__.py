"""qrnn_lm: fast, low-budget neural language modelling with QRNNs.

Submodules are imported lazily so that ``import qrnn_lm`` stays cheap and a
missing optional piece never breaks the others.
"""
import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "fo_pool": "qrnn_lm.ops",
    "fo_pool_reference": "qrnn_lm.ops",
    "compiled_devices": "qrnn_lm.ops",
    "QRNN": "qrnn_lm.rnn",
    "LSTM": "qrnn_lm.rnn",
    "pack_list": "qrnn_lm.rnn",
    "unpack_to_list": "qrnn_lm.rnn",
    "Vocabulary": "qrnn_lm.vocab",
    "LanguageModel": "qrnn_lm.lm",
    "QrnnLmError": "qrnn_lm.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'qrnn_lm' has no attribute {name!r}")


def __dir__():
    return __all__
