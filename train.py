"""Train a QRNN/LSTM language model: ``python train.py --help``.

The same as ``python -m qrnn_lm train``; the training loop lives in
qrnn_lm/train.py.
"""
import sys

from qrnn_lm.train import main

if __name__ == "__main__":
    sys.exit(main())
