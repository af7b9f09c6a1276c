"""crysk's fused C++ kernels for CPU training (opt-in): what they are, how they are built, the switch.

A CPU training step spends most of its time in the per-edge half of each
convolution, in torch's elementwise, batch-norm and index kernels, each a
pass over ``(n_edges, 2 * atom_fea_len)`` floats. ``_cpu_kernels.cpp`` does
the same work in four passes per layer instead of about fifteen (see
:class:`crysk.nn.layers._EdgeConv`), threaded with ``at::parallel_for`` so
that ``torch.set_num_threads`` applies. It is compiled on this machine on
first use with ``torch.utils.cpp_extension`` (a C++ compiler and ``ninja``
needed; about a minute once, then cached by torch under
``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``).

It is off by default, because the first use compiles: turn it on for the
process with :func:`enable` (which builds at once and says what is missing if
it cannot), or set the environment variable ``CRYSK_CPU_KERNELS=1`` (then a
failed build warns once and training keeps torch's kernels). Like
``torch.backends`` flags it is a switch of the process, not an estimator
parameter: it changes speed, not the function computed (results agree with
torch's kernels within float rounding), so it has no place in
``get_params``, grid searches or pickles.

The kernels serve training steps on the CPU with graphs in crysk's usual
form (every atom's neighbours stored atom by atom, float32); other batches,
inference and GPU steps use torch's kernels as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["enable", "enabled", "build", "ENV_VAR"]

#: Environment variable that turns the kernels on ("1", "true", "on", "yes") when :func:`enable` was not called.
ENV_VAR = "CRYSK_CPU_KERNELS"

_SOURCE = Path(__file__).with_name("_cpu_kernels.cpp")
# -ffast-math lets gcc call glibc's vectorised exp and log1p (declared only under __FAST_MATH__); it is passed
# to the compiler only: linking a shared library with it would add crtfastmath.o, which sets flush-to-zero for
# the whole process. The kernels do not rely on NaN or infinity (softplus has its threshold, sigmoid's exp may
# overflow to +inf, which IEEE arithmetic still handles on these paths).
_CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
_LDFLAGS = ["-fopenmp"]

_lock = threading.Lock()
_module: ModuleType | None = None
_error: str | None = None
_switch: bool | None = None  # None: read ENV_VAR
_warned = False


def _cpu_signature() -> str:
    """What ``-march=native`` compiled for: the CPU's model and flags (a shared cache may serve other CPUs)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _build_name() -> str:
    """Extension name keyed by the source, flags, torch version and CPU, so a stale or foreign build is never loaded."""
    key = "\n".join([_SOURCE.read_text(), " ".join(_CFLAGS + _LDFLAGS), torch.__version__, _cpu_signature()])
    return "crysk_cpu_kernels_" + hashlib.sha256(key.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _ninja_on_path():
    """Within the block, the ``ninja`` pip package's binary is on ``PATH`` if no ``ninja`` was.

    torch's builder runs ``ninja`` from ``PATH``; a virtual environment used
    without activating it has the pip package's binary installed but not on
    ``PATH``. The process's ``PATH`` is restored afterwards.
    """
    bin_dir = None
    if shutil.which("ninja") is None:
        try:
            import ninja

            bin_dir = getattr(ninja, "BIN_DIR", None)
        except ImportError:
            pass
    if not bin_dir or not os.path.isdir(bin_dir):
        yield
        return
    before = os.environ.get("PATH")
    os.environ["PATH"] = bin_dir + os.pathsep + (before or "")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = before


def build(verbose: bool = False) -> ModuleType:
    """Compile (or load the cached build of) the kernels for this machine and return the extension module.

    Parameters
    ----------
    verbose : bool, default=False
        Show the compiler's output.

    Returns
    -------
    module
        The extension (``edge_pre_stats``, ``gate_forward``, ``gate_backward_sums``, ``bn_backward_apply``).

    Raises
    ------
    RuntimeError
        When the build fails (no C++ compiler or ``ninja``, no Python headers): the message says what
        failed and that training works without the kernels.
    """
    global _module, _error
    with _lock:
        if _module is not None:
            return _module
        if _error is not None:
            raise RuntimeError(_error)
        try:
            from torch.utils.cpp_extension import load

            with _ninja_on_path():
                _module = load(
                    name=_build_name(), sources=[str(_SOURCE)], extra_cflags=_CFLAGS, extra_ldflags=_LDFLAGS,
                    verbose=verbose,
                )
        except Exception as exc:  # compiler, ninja or headers missing: any of torch's build errors
            _error = (
                f"crysk's CPU kernels could not be built ({type(exc).__name__}: {str(exc).strip()[:500]}). They "
                "need a C++ compiler (g++ or clang++), ninja (pip install ninja) and Python's headers; crysk "
                "trains without them (crysk.nn.cpu_kernels.enable(False), or unset CRYSK_CPU_KERNELS)."
            )
            raise RuntimeError(_error) from exc
        return _module


def enable(on: bool = True, verbose: bool = False) -> None:
    """Turn the fused CPU kernels on (building them now) or off for this process.

    Parameters
    ----------
    on : bool, default=True
        ``True`` builds the kernels (about a minute the first time on a
        machine, then cached) and uses them in every CPU training step that
        suits them; ``False`` goes back to torch's kernels.
    verbose : bool, default=False
        Show the compiler's output.

    Raises
    ------
    RuntimeError
        When ``on`` and the kernels cannot be built (the switch stays off).

    Examples
    --------
    >>> import crysk.nn.cpu_kernels
    >>> crysk.nn.cpu_kernels.enable()  # doctest: +SKIP
    """
    global _switch
    if on:
        build(verbose=verbose)
    _switch = bool(on)


def enabled() -> bool:
    """Whether CPU training steps use the kernels (:func:`enable`, else the ``CRYSK_CPU_KERNELS`` variable).

    Returns
    -------
    bool
    """
    if _switch is not None:
        return _switch
    return os.environ.get(ENV_VAR, "").strip().lower() in ("1", "true", "on", "yes")


def active() -> ModuleType | None:
    """The extension module when the kernels are on and built, else ``None`` (for the layers).

    Turned on by the environment variable and failing to build, they warn
    once and stay off for the process.
    """
    global _switch, _warned
    if not enabled():
        return None
    try:
        return build()
    except RuntimeError as exc:
        _switch = False
        if not _warned:
            _warned = True
            warnings.warn(f"{exc} Training goes on with torch's kernels.", RuntimeWarning, stacklevel=3)
        return None
