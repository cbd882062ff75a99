"""Triton's interpreter (TRITON_INTERPRET=1): detection, and two fixes for running these kernels in it.

Whether kernels are interpreted is decided once, when they are defined (Triton reads the variable
at decoration time), so it is read here once too. The fixes touch the interpreter only; compiled
GPU kernels never take these paths.
"""

from __future__ import annotations

from ..backends import triton_interpreted

INTERPRETED = triton_interpreted()


def _fix_interpreter_index() -> None:
    """Let a runtime scalar bound a `for` loop under the interpreter with NumPy >= 2.4.

    The interpreter holds scalars as 1-element arrays and converts them with ``int(array)``, which
    NumPy 2.4 turned into a TypeError (triton-lang/triton#9171, fixed upstream after Triton 3.6 by
    converting with ``.squeeze()``). The same conversion is installed here, in the interpreter only;
    compiled GPU kernels never take this path.
    """
    from triton.runtime import interpreter

    patch_tensor = interpreter._patch_lang_tensor
    if getattr(patch_tensor, "_logo_attn_fixed", False):
        return

    def patched(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    patched._logo_attn_fixed = True
    interpreter._patch_lang_tensor = patched


def _skip_nested_repatching() -> None:
    """Stop the interpreter re-patching triton.language at every call of a @triton.jit helper.

    A kernel launch patches the language modules its kernel sees once for the whole grid; Triton
    3.6 then repeats that patch (an ``inspect.getmembers`` sweep, ~1 ms) at every nested helper
    call, which was ~40% of the interpreted run time of these kernels. Here a helper call patches
    only language modules the running launch has not patched yet (e.g. ``tl.core`` for the helpers
    of ``tl.zeros``) and otherwise runs the rewritten function directly, as Triton's own call does
    after its patch. Only applied when Triton's interpreter has the structure this relies on.
    """
    import inspect

    import triton.language as tl
    from triton.runtime import interpreter

    launch = interpreter.GridExecutor.__call__
    device_call = interpreter.InterpretedFunction.__call__
    if getattr(device_call, "_logo_attn_fixed", False) or not hasattr(interpreter.InterpretedFunction, "rewrite"):
        return
    patched_by_launch: list[set[int]] = []  # language modules patched, per running launch
    seen: dict[object, frozenset[int]] = {}

    def languages(fn) -> frozenset[int]:
        if fn not in seen:
            seen[fn] = frozenset(id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and v in (tl, tl.core))
        return seen[fn]

    def launch_once(self, *args, **kwargs):
        patched_by_launch.append(set(languages(self.fn)))
        try:
            return launch(self, *args, **kwargs)
        finally:
            patched_by_launch.pop()

    def call_helper(self, *args, **kwargs):
        if not patched_by_launch:
            return device_call(self, *args, **kwargs)
        needed = languages(self.fn)
        if not needed <= patched_by_launch[-1]:
            interpreter._patch_lang(self.fn)
            patched_by_launch[-1] |= needed
        try:
            return self.rewrite()(*args, **kwargs)
        except Exception as error:
            raise interpreter.InterpreterError(repr(error)) from error

    call_helper._logo_attn_fixed = True
    interpreter.GridExecutor.__call__ = launch_once
    interpreter.InterpretedFunction.__call__ = call_helper



if INTERPRETED:
    _fix_interpreter_index()
    _skip_nested_repatching()
