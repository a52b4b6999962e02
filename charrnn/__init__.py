"""charrnn: character-level RNN, GRU and LSTM language models in vectorized NumPy.

The math lives in :mod:`charrnn.cells` (one layer over T steps, forward and
backward) and :mod:`charrnn.model` (a stack of layers, the softmax output and
one-step generation). Nothing here imports the command line.
"""

__version__ = "0.1.0"
