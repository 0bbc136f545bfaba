"""The size of a model, known before it is built.

A model config comes from flags (``train.py --nhid``) or from a checkpoint,
which may be a stranger's file: every number in it that sizes memory or a
loop is bounded here (:func:`config_dict_problem`), and the parameter count
and bytes are computed from the config (:func:`parameter_count`) and checked
against a sane bound and the memory this machine has free
(:func:`check_model_size`) before anything is allocated.  No psutil: the
free memory is ``MemAvailable`` of /proc/meminfo (else the physical pages),
lowered to what an address-space limit (``ulimit -v``) and a container's
memory limit (cgroup v2) still allow.
"""
from __future__ import annotations

import math
import os
from types import SimpleNamespace

from .errors import QrnnLmError

MAX_DIM = 1 << 20            # emsize / nhid: 1M units (a 1M x 1M layer is 4 TB)
MAX_LAYERS = 1024
MAX_WINDOW = 64              # QRNN convolution width
MAX_OUTPUTS = 1 << 26        # model outputs (vocabulary size)
MAX_CUTOFFS = 64             # adaptive softmax clusters
MAX_PARAMETERS = 1 << 35     # 34G parameters: 137 GB of float32 weights
BYTES_TO_TRAIN = 16          # float32 weight, gradient and two Adam moments per parameter
BYTES_TO_RUN = 4

FLAG_OF = {"emsize": "--emsize", "nhid": "--nhid", "nlayers": "--nlayers"}   # train.py's flags of config fields
_BOUNDS = (("vocab_size", 2, MAX_OUTPUTS), ("emsize", 1, MAX_DIM), ("nhid", 1, MAX_DIM),
           ("nlayers", 1, MAX_LAYERS), ("window", 1, MAX_WINDOW))


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def config_dict_problem(d) -> str | None:
    """What makes a model config dict (a checkpoint's ``config``) one that
    must not be built, in a few words naming the key, or None."""
    if not isinstance(d, dict):
        return "the model config is not a dict"
    for key, low, high in _BOUNDS:
        v = d.get(key, low)
        if not _whole(v):
            return f"{key} is {v!r}, not a whole number"
        if not low <= v <= high:
            return f"{key} is {v}, outside {low}..{high}"
    cutoffs = d.get("cutoffs") or []
    if not isinstance(cutoffs, list) or len(cutoffs) > MAX_CUTOFFS or not all(_whole(c) for c in cutoffs):
        return f"cutoffs is not a list of at most {MAX_CUTOFFS} whole numbers"
    div = d.get("div_value", 4.0)
    if isinstance(div, bool) or not isinstance(div, (int, float)) or not (math.isfinite(div) and 1 <= div <= 1024):
        return f"div_value is {div!r}, not a number in 1..1024"
    return None


def parameter_count(c) -> int:
    """The parameters of ``RNNLanguageModel(c)`` (a ModelConfig or anything
    with its fields), computed without building it."""
    total = c.vocab_size * c.emsize                   # the input embedding
    n_out = c.nhid
    for layer in range(c.nlayers):
        n_in = c.emsize if layer == 0 else c.nhid
        n_out = c.emsize if (c.tied and layer == c.nlayers - 1) else c.nhid
        if c.rnn == "qrnn":
            total += 3 * n_out * (c.window if layer == 0 else 1) * n_in + 3 * n_out
        else:
            total += 4 * n_out * (n_in + n_out) + 8 * n_out
    if c.softmax != "adaptive":
        return total + c.vocab_size + (0 if c.tied else n_out * c.vocab_size)
    cutoffs = list(c.cutoffs) + [c.vocab_size]
    total += n_out * (cutoffs[0] + len(cutoffs) - 1)  # the head: frequent outputs and one per cluster
    for i in range(len(cutoffs) - 1):
        h = int(n_out // c.div_value ** (i + 1))
        total += n_out * h + h * (cutoffs[i + 1] - cutoffs[i])
    return total


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable (else physical
    memory), capped by an address-space limit; None when unknown."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    for limit in (_address_space_left(), _cgroup_memory_left()):
        if limit is not None:
            avail = limit if avail is None else min(avail, limit)
    return avail


def _cgroup_memory_left() -> int | None:
    """What a container's memory limit (cgroup v2) still allows, or None."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
        return None if limit == "max" else max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def _address_space_left() -> int | None:
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    used = 0
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    used = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(0, soft - used)


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n < 1e12 else f"{n / 1e12:.3g} TB"


def largest_dimension(c) -> str:
    """The config field that makes the model big: ``nhid`` when the
    recurrent layers dominate (``nlayers`` when there are many), ``emsize``
    when the embeddings do."""
    rnn = parameter_count(c) - c.vocab_size * (c.emsize + c.nhid)
    if c.nlayers > 8 and rnn > c.vocab_size * c.emsize:
        return "nlayers"
    if rnn > c.vocab_size * c.emsize:
        return "nhid" if c.nhid >= c.emsize else "emsize"
    return "emsize"


def check_model_size(c, *, what: str, names: dict | None = None, training: bool = False,
                     memory: int | None = -1) -> int:
    """Refuse, in one sentence, a model too large to build: more than
    ``MAX_PARAMETERS`` or more bytes (``BYTES_TO_TRAIN``/``BYTES_TO_RUN`` a
    parameter) than ``memory`` (default: :func:`available_memory`).
    ``what`` names the model's source ("the model of these flags", "checkpoint
    X"); ``names`` maps config fields to what the user sets (``{"nhid":
    "--nhid"}``).  Returns the parameter count."""
    n = parameter_count(c)
    need = n * (BYTES_TO_TRAIN if training else BYTES_TO_RUN)
    memory = available_memory() if memory == -1 else memory
    too_many = n > MAX_PARAMETERS
    if not too_many and (memory is None or need <= memory):
        return n
    key = largest_dimension(c)
    flag = (names or {}).get(key, key)
    where = f"{what}: a model of {n:.3g} parameters needs {_gb(need)} of memory to {'train' if training else 'run'}"
    if too_many:
        raise QrnnLmError(f"{where}, more than the {MAX_PARAMETERS:.3g} parameters this qrnn_lm builds; "
                          f"lower {flag} (now {getattr(c, key)}).")
    raise QrnnLmError(f"{where} but this machine has {_gb(memory)} of memory available; "
                      f"lower {flag} (now {getattr(c, key)}).")


def check_flag_sizes(args) -> None:
    """Model sizes no machine can hold, before any data is read: each
    dimension within the bounds above and the smallest model the
    flags allow (2 outputs, the given or CPU-default sizes) within this
    machine's memory (weights, gradients and Adam moments without a GPU,
    the weights with one); the flag to lower is named (``check_flags``)."""
    for name, high in (("emsize", MAX_DIM), ("nhid", MAX_DIM), ("nlayers", MAX_LAYERS), ("window", MAX_WINDOW)):
        v = getattr(args, name)
        if v is not None and v > high:
            raise QrnnLmError(f"--{name} {v} is more than the {high} this qrnn_lm builds; lower --{name}.")
    sizes = {"emsize": args.emsize or 16, "nhid": args.nhid or 16, "nlayers": args.nlayers or 1}
    smallest = SimpleNamespace(vocab_size=2, rnn=args.rnn or "qrnn", window=args.window or 1, tied=bool(args.tied),
                               softmax="full", cutoffs=[], div_value=4.0, **sizes)
    import torch   # on a GPU the optimizer state is not in this machine's memory
    check_model_size(smallest, what="the model of these flags", training=not torch.cuda.is_available(),
                     names=FLAG_OF)
