"""silentzone: do fidelity metrics predict the benchmark quality of quantized LLMs?"""

__version__ = "0.1.0"
