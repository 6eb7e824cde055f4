"""A loss of a Pyro model and guide replayed as a traced tensor program.

A training step of a small model spends much of its time in Python: Pyro's effect handlers run
every ``pyro.sample`` through the messenger stack, and each ``torch.distributions`` object is
built, broadcast and expanded anew, all to issue a few dozen tensor ops. :class:`TracedLoss`
records those ops once with ``torch.jit.trace`` and afterwards runs only them (forward and
backward), the way Pyro's ``JitTrace_ELBO`` does for the param-store: the value, the gradient and
the random draws are the same program's, now without its Python.

What a trace fixes, and how each stays right:

* shapes, dtypes and devices of the arguments, and Python-level values (the data plate's
  size N, a ``poutine.scale`` factor β, the number of particles): one trace per signature, the
  arguments' shapes, dtypes and devices, the grad mode, ``key`` and the *constants*: every plain
  Python value (bool, int, float, str, None, tuples of them) held in a public attribute of the
  owner's modules, of the loss and of the plain objects the loss holds (an ELBO module's ELBO, with its
  particle count). Changing ``vae.kl_scale``, ``vae.num_data`` or ``elbo.num_particles`` thus
  selects another trace, never a stale one; ``key`` carries what the scan cannot see (a value
  in a closure). A signature seen once only (a warm-up changing β each step) runs eagerly until
  it repeats;
* the arithmetic: a trace runs without the graph executor's optimizations
  (``torch.jit.optimized_execution(False)``), its ops as recorded and differentiated by eager
  autograd, so losses and gradients are bitwise the eager ones (the executor's own autodiff
  rounds differently, which would break exact resumption, and on CPU it is no faster);
* fresh randomness: ``torch.randn`` and friends are recorded as ops, so each call draws anew from
  the global generator, consuming it exactly as the eager program does (tracing itself runs under
  ``torch.random.fork_rng`` and leaves the generator where it was);
* a program whose ops depend on the data (a loop over a tensor's values, an ``.item()`` in a
  branch) would be traced wrongly, and so would a gradient that Python reshapes outside the ops
  (a tensor hook, as DReG's doubly reparameterized gradient uses): every new trace is checked
  once against the eager program on the next call's data (not the data it was traced on) with the same draws; a
  loss or a parameter's gradient differing by more than ``rtol`` (relative) keeps that signature
  eager for good and warns once.

A program that ``torch.jit.trace`` cannot record at all (it raises, as for a spline-coupling
flow, whose ``Transform.sign`` it probes) runs eagerly too, with one :class:`TraceNotice`.

``torch.jit.trace`` is deprecated in favour of ``torch.compile``, which on CPU compiles C++ kernels
at start-up and breaks its graph at Pyro's handlers; the trace is what runs here. Its deprecation
warning is silenced around the one call that makes each trace.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

#: Relative difference between traced and eager loss or gradient (same draws) above which a trace
#: is refused: float32 sums of ~10⁵ terms differ by ~10⁻⁶ relative from reassociation alone.
RTOL = 1e-4
_PLAIN = (bool, int, float, str, type(None))


class TraceNotice(UserWarning):
    """A signature runs eagerly: its trace disagreed with the eager program, or could not be made."""


class _Program(nn.Module):
    """``loss(*args)`` as a module that owns the parameters (traces capture module parameters
    as inputs, free tensors as constants)."""

    loss: Callable[..., Tensor]

    def __init__(self, owner: nn.Module, loss: Callable[..., Tensor]) -> None:
        super().__init__()
        self.owner = owner
        object.__setattr__(self, "loss", loss)  # not a submodule: owner holds the parameters

    def forward(self, *args: Tensor) -> Tensor:
        return self.loss(*args)


class TracedLoss:
    """``traced(*args, key=...)`` = ``loss(*args)``, replayed from a trace (module docstring).

    ``owner`` must hold every parameter the loss reads (as ``nn.Module`` parameters: Pyro's
    module-local mode); ``loss`` takes tensors only and returns a scalar tensor. ``inputs`` names
    attributes that the loss itself replaces by one of its tensor arguments while it runs (a β
    passed as a tensor): they are not constants and select no trace.

    Per signature (argument shapes, dtypes, devices, grad mode, ``key``, constants): the first call runs
    eagerly; the second runs eagerly and traces; the third checks the trace against the eager
    program on its own arguments, new data, with the same draws; from then on the trace runs, or
    the eager program where the check failed.
    """

    def __init__(
        self,
        loss: Callable[..., Tensor],
        owner: nn.Module,
        rtol: float = RTOL,
        inputs: Iterable[str] = (),
    ) -> None:
        self.program = _Program(owner, loss)
        self.rtol = rtol
        skip = set(inputs)
        self.slots = [s for s in constant_slots(owner, loss) if s[1] not in skip]
        self.calls: dict[Hashable, int] = {}
        self.candidates: dict[Hashable, Callable[..., Tensor]] = {}
        self.traces: dict[Hashable, Callable[..., Tensor]] = {}  # the checked ones
        self.refused: set[Hashable] = set()
        self.noticed = False

    def constants(self) -> tuple[Any, ...]:
        """The current values of the constants (module docstring), in slot order; a value that
        is no longer plain stands as its id (a new signature whenever it changes)."""
        values = tuple([attributes.get(name) for attributes, name in self.slots])
        try:
            hash(values)
        except TypeError:
            return tuple(v if _is_constant(v) else id(v) for v in values)
        return values

    def __call__(self, *args: Tensor, key: Hashable = None) -> Tensor:
        signature = (
            key,
            torch.is_grad_enabled(),
            tuple((a.shape, a.dtype, a.device) for a in args),
            self.constants(),
        )
        program = self.traces.get(signature)
        if program is not None:
            with torch.jit.optimized_execution(False):
                return program(*args)
        if signature in self.refused:
            return self.program(*args)
        calls = self.calls[signature] = self.calls.get(signature, 0) + 1
        try:
            if calls == 2:
                self.candidates[signature] = self._trace(args)
            elif calls == 3:
                candidate = self.candidates.pop(signature)
                if self._agrees(candidate, args):
                    self.traces[signature] = candidate
                    with torch.jit.optimized_execution(False):
                        return candidate(*args)
                self._refuse(
                    signature,
                    "the traced loss or its gradient differs from the eager "
                    "one on new data with the same draws",
                )
        except Exception as exc:
            self.candidates.pop(signature, None)
            message = " ".join(str(exc).split())[:200]
            self._refuse(
                signature,
                f"the loss cannot be traced ({type(exc).__name__}"
                + (f": {message})" if message else ")"),
            )
        return self.program(*args)

    def _refuse(self, signature: Hashable, why: str) -> None:
        """Keep ``signature`` eager; the first refusal warns (one line)."""
        self.refused.add(signature)
        if not self.noticed:
            self.noticed = True
            warnings.warn(
                f"{why}; the program runs eagerly for these inputs", TraceNotice, stacklevel=3
            )

    def _trace(self, args: tuple[Tensor, ...]) -> Callable[..., Tensor]:
        with torch.random.fork_rng(devices=_devices(args)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # DeprecationWarning, TracerWarnings on shapes
                return torch.jit.trace(self.program, args, check_trace=False)

    def _agrees(self, traced: Callable[..., Tensor], args: tuple[Tensor, ...]) -> bool:
        """Whether traced and eager programs agree at ``args`` on the same draws: the loss to
        ``rtol``, and (in grad mode) each parameter's gradient g to ``rtol``·max|g_eager|."""
        params = [p for p in self.program.parameters() if p.requires_grad]
        with torch.random.fork_rng(devices=_devices(args)):
            seed = int(torch.randint(2**62, ()))
            results = []
            for program in (self.program, traced):
                torch.manual_seed(seed)
                with torch.jit.optimized_execution(False):
                    loss = program(*args)
                grads = (
                    torch.autograd.grad(loss, params, allow_unused=True)
                    if loss.requires_grad
                    else ()
                )
                results.append((loss.detach(), grads))
        (eager, eager_grads), (replayed, replayed_grads) = results
        if not torch.allclose(replayed, eager, rtol=self.rtol, atol=0.0, equal_nan=True):
            return False
        for got, want in zip(replayed_grads, eager_grads):
            if (got is None) != (want is None):
                return False
            if want is not None and not torch.allclose(
                got, want, rtol=0.0, atol=self.rtol * float(want.abs().max()), equal_nan=True
            ):
                return False
        return True


def constant_slots(*roots: object) -> list[tuple[dict[str, Any], str]]:
    """(attribute dict of an object, attribute name) of every plain Python value in a public attribute (private ones
    are caches and bookkeeping) of the modules under each root (or the root itself when it is
    not a module) and of the plain objects these hold directly (not tensors, modules or
    containers): the constants a trace may fold."""
    objects: dict[int, object] = {}
    for root in roots:
        objects.update(
            (id(m), m) for m in (root.modules() if isinstance(root, nn.Module) else [root])
        )
    for obj in list(objects.values()):
        objects.update((id(v), v) for v in _attributes(obj) if _is_plain_object(v))
    return [
        (vars(obj), name)
        for obj in objects.values()
        for name, value in vars(obj).items()
        if not name.startswith("_") and _is_constant(value)
    ]


def _attributes(obj: object) -> Iterable[Any]:
    return vars(obj).values() if hasattr(obj, "__dict__") else ()


def _is_plain_object(value: Any) -> bool:
    return (
        hasattr(value, "__dict__")
        and not isinstance(value, (nn.Module, Tensor, type))
        and not inspect.isroutine(value)
    )


def _is_constant(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_is_constant(v) for v in value)
    return isinstance(value, _PLAIN)


def _devices(args: tuple[Tensor, ...]) -> list[int]:
    return sorted({a.device.index or 0 for a in args if a.device.type == "cuda"})


__all__ = ["RTOL", "TraceNotice", "TracedLoss", "constant_slots"]
