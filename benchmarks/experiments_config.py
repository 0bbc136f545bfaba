"""Settings shared by the experiments (run_experiments.py, experiments/) and
the report renderer (render_results.py): models, methods, labels, profiles."""

MODEL = ["--emsize", "128", "--nhid", "256", "--nlayers", "2", "--softmax", "adaptive",
         "--dropout", "0.1", "--dropouth", "0.1", "--dropouti", "0.1", "--dropoute", "0.0",
         "--batch_size", "32", "--bptt", "70", "--optimizer", "adamw", "--lr", "3e-3",
         "--eval-batch-size", "32", "--seed", "1111", "--no-progress",
         "--lr-decay", "1.0"]  # no plateau decay: frequent validations would cut the lr at noise
CUT = 0.4                 # kept fraction of the MeCab training types
RARE_METHODS = [          # (name, label, prepare flags beyond --vocab-size N)
    ("full", "full vocabulary (no cut)", ["--rare", "unk"]),
    ("unk", "unk (1 bucket)", ["--rare", "unk"]),
    ("pos1", "pos, depth 1", ["--rare", "pos", "--pos-depth", "1"]),
    ("pos2", "pos, depth 2", ["--rare", "pos", "--pos-depth", "2"]),
    ("kmeans64", "kmeans K=64", ["--rare", "kmeans", "--buckets", "64"]),
    ("kmeans256", "kmeans K=256", ["--rare", "kmeans", "--buckets", "256"]),
    ("kmeans1024", "kmeans K=1024", ["--rare", "kmeans", "--buckets", "1024"]),
    ("poskmeans256", "pos+kmeans K=256", ["--rare", "pos+kmeans", "--buckets", "256", "--pos-depth", "2"]),
    ("sentencepiece", "sentencepiece (as many pieces)", ["--tokenizer", "sentencepiece", "--rare", "unk"]),
    ("char", "char (all characters)", ["--tokenizer", "char", "--rare", "pos"]),
]
RNN_RUNS = [("qrnn", "stream"), ("lstm", "stream"), ("qrnn", "sentences"), ("lstm", "sentences")]
RNN_DATA = "kmeans256"
MEM_SIZES = [10_000, 25_000, 50_000, 100_000, 150_000, 250_000]
MEM_METHODS = [("full", "full softmax"), ("buckets", "40% kept + 256 buckets, full softmax"),
               ("adaptive", "adaptive softmax")]
SAMPLES, SAMPLE_TOKENS = 5, 60
REPEAT, REPEAT_SEED = ["unk", "kmeans256"], 2   # rare-word runs repeated with another seed

# Rare-word sweep: every scheme trained for the same number of steps with the
# budget schedule (warmup, cosine to 0.1 x lr at the last step) on the model
# and optimiser the defaults rule gives a CPU (README "Defaults"); the output
# layer (full, or adaptive above 2,000 outputs) is chosen per cut, the same
# for every scheme of the cut.
SWEEP_MODEL = ["--rnn", "qrnn", "--emsize", "128", "--nhid", "256", "--nlayers", "2",
               "--dropout", "0.1", "--dropouth", "0.1", "--dropouti", "0.1", "--dropoute", "0.0",
               "--batch_size", "32", "--bptt", "35", "--optimizer", "adamw", "--lr", "5e-3",
               "--no-progress", "--log-interval", "100"]
SWEEP_SCHEMES = [  # (name, label, prepare flags beyond --vocab-size N; {K}, {FASTTEXT}, {CONTEXT} filled in)
    ("unk", "unk (1 bucket)", ["--rare", "unk"]),
    ("pos", "pos, depth 2", ["--rare", "pos", "--pos-depth", "2"]),
    ("pos+script", "pos × character type", ["--rare", "pos+script", "--pos-depth", "2"]),
    ("kmeans-ppmi", "k-means, PPMI-SVD vectors", ["--rare", "kmeans", "--buckets", "{K}", "--vectors", "ppmi"]),
    ("kmeans-fasttext", "k-means, fastText vectors", ["--rare", "kmeans", "--buckets", "{K}",
                                                      "--vectors", "{FASTTEXT}"]),
    ("kmeans-context", "k-means, context vectors (unk model)", ["--rare", "kmeans", "--buckets", "{K}",
                                                                "--vectors", "{CONTEXT}"]),
    ("pos+kmeans-fasttext", "pos+kmeans, fastText vectors", ["--rare", "pos+kmeans", "--buckets", "{K}",
                                                             "--pos-depth", "2", "--vectors", "{FASTTEXT}"]),
    ("exchange", "exchange classes (no vectors)", ["--rare", "exchange", "--buckets", "{K}"]),
]

PROFILES = {
    # Minutes of training per rare-word run and per QRNN/LSTM run.  Validation
    # intervals (steps) give every QRNN/LSTM run about ten validations in its
    # budget (the LSTM takes about half as many steps, and a sentence batch
    # holds ~700 tokens against 2240 for a 32 x 70 window); each validation
    # row of metrics.jsonl carries its training time, the learning curve's x.
    # The log interval only sets how often train.py prints and logs a row.
    "real": {"rare_minutes": 1.5, "rnn_minutes": 2.0, "eval_interval": {"qrnn-stream": 60, "lstm-stream": 30,
                                                                         "qrnn-sentences": 180, "lstm-sentences": 90},
             "log_interval": 10, "methods": [m[0] for m in RARE_METHODS], "mem_sizes": MEM_SIZES,
             "workers": 2,
             # 4 cuts x 8 schemes x 3 seeds x 1,200 steps (about half a pass over the
             # corpus, a 1-2 minute budget); its time: docs/RESULTS.md, "Regenerate".
             # Cuts run in "order": the 10% and 20% cuts first.
             "sweep": {"shares": [0.02, 0.05, 0.10, 0.20], "order": [0.10, 0.20, 0.05, 0.02], "steps": 1200,
                       "seeds": [1, 2, 3], "buckets": 64, "samples": 20, "sample_tokens": 60, "valid_every": 16,
                       "schemes": [n for n, _, _ in SWEEP_SCHEMES]}},
    "quick": {"rare_minutes": 0.1, "rnn_minutes": 0.15, "eval_interval": {"qrnn-stream": 5, "lstm-stream": 5,
                                                                           "qrnn-sentences": 5, "lstm-sentences": 5},
              "log_interval": 1, "methods": ["full", "unk", "pos1", "kmeans64", "kmeans256", "sentencepiece",
                                             "char"],
              "mem_sizes": [10_000, 30_000], "workers": 1,
              "lines": {"train": 3000, "valid": 800, "test": 300},
              "sweep": {"shares": [0.1, 0.2], "steps": 5, "seeds": [1, 2], "buckets": 8, "valid_every": 4,
                        "samples": 2, "sample_tokens": 20, "schemes": [n for n, _, _ in SWEEP_SCHEMES]}},
}
