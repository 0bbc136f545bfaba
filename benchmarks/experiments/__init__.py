"""The experiments of docs/RESULTS.md, one module each, on a small runner.

``runner`` holds what every experiment shares (the resumable JSON store,
preparing a dataset, running train.py and reading the JSON it writes);
``rare``, ``rnn``, ``memory``, ``repeat``, ``breakdown`` and ``sweep`` are the
experiments; ``scoring`` scores a trained run (per-token bits, samples).
``benchmarks/run_experiments.py`` is the command line.
"""
