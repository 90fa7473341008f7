"""Onboard export: an exported MLP policy (``policy.onnx`` + ``policy.json``) as one dependency-free C99
source and header, for firmware that cannot run onnxruntime (a Crazyflie's STM32, a flight controller).

The C is translated node by node from the ONNX graph itself, not from the checkpoint, so what runs
onboard is what was verified on the robot side: the folded observation normalizer (Sub, Div), the
layers (Gemm / MatMul), the activations (Elu, Tanh, Relu), the action bias and the clip to the action
bounds, in the graph's order. The weights are float32 ``static const`` arrays; ``tether_policy_step``
uses no heap, no globals it writes, and from libm only what the activations need (``expf`` for Elu,
``tanhf`` for Tanh). The header carries the contract facts the firmware needs, read from the contract
(never re-typed): observation layout, action type, size, bounds and the normalized -> physical
constants of :mod:`tether.actions`, control rate, contract version, the ONNX file's sha256.

:func:`export_c` writes the two files and verifies them: it compiles the source with the system C
compiler (strict C99, warnings as errors), calls it through ctypes on random observations around the
normalizer's statistics and on observations of a short pybullet flight built by
:func:`tether.observation.build_observation`, and refuses (:class:`OnboardMismatch`) when any output
differs from onnxruntime by more than :data:`TOLERANCE`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tether.contract import VOCABULARY, ContractError, PolicyContract, load_policy_dir, sha256_file
from tether.errors import UserError

TOLERANCE = 1e-5
"""max |C - onnxruntime| accepted on any output"""
DEFAULT_NAME = "tether_policy"
COMPILERS = ("cc", "gcc", "clang")
C_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")
SUPPORTED_OPS = ("Constant", "Identity", "Sub", "Add", "Mul", "Div", "Gemm", "MatMul", "Elu", "Tanh", "Relu", "Clip")
ERR_NONFINITE_OBS = -1
ERR_NONFINITE_ACTION = -2


class OnboardError(RuntimeError):
    """The graph cannot be translated, or the C cannot be built."""


class OnboardMismatch(OnboardError):
    """The compiled C disagrees with onnxruntime beyond the tolerance."""


@dataclasses.dataclass(frozen=True)
class OnboardExport:
    c_path: Path
    """the generated source"""
    h_path: Path
    """the generated header"""
    max_abs_err: float
    """max |C - onnxruntime| over the checked observations (NaN when not verified)"""
    n_checked: int
    """observations checked"""
    compiler: str
    """the compiler used for the check ('' when not verified)"""


# ------------------------------------------------------------------------------------- literals


def _f(value: float) -> str:
    """A float32 as a C literal that reads back bit-exact (9 significant digits)."""
    v = float(np.float32(value))
    if not np.isfinite(v):
        raise OnboardError(f"a weight or constant is {v}; the policy is not finite")
    text = f"{v:.9g}"
    if "e" not in text and "." not in text:
        text += ".0"
    text += "f"
    return f"({text})" if v < 0 else text


def _array(values: np.ndarray, per_line: int = 8) -> str:
    """A C initializer: {a, b, ...} for a vector, one braced row per line group for a matrix."""
    values = np.asarray(values, dtype=np.float32)
    rows = values.reshape(-1, values.shape[-1]) if values.ndim == 2 else values.reshape(1, -1)
    out = []
    for row in rows:
        flat = [_f(v) for v in row]
        out.append(",\n    ".join(", ".join(flat[i:i + per_line]) for i in range(0, len(flat), per_line)))
    if values.ndim == 2:
        return "{\n    {" + "},\n    {".join(out) + "}\n}"
    return "{\n    " + out[0] + "\n}"


def _ident(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", name).strip("_") or "t"


# ------------------------------------------------------------------------------------ translation


@dataclasses.dataclass
class _Tensor:
    length: int
    """element count with the batch dimension dropped"""
    expr: str = ""
    """C name of the buffer (runtime) or of the const array"""
    value: np.ndarray | None = None
    """the values of a constant (None: computed at run time)"""


class _Translator:
    """Walks the ONNX graph in its (topological) order and emits C statements for batch size one."""

    def __init__(self, model, contract: PolicyContract, prefix: str):
        from onnx import numpy_helper

        self.numpy_helper = numpy_helper
        self.model, self.contract, self.prefix = model, contract, prefix
        self.consts: list[str] = []  # static const definitions
        self.body: list[str] = []  # statements of the step function
        self.tensors: dict[str, _Tensor] = {}
        self.libm: set[str] = set()
        self._n = 0
        for init in model.graph.initializer:
            self.tensors[init.name] = _Tensor(0, value=numpy_helper.to_array(init).astype(np.float32))
        graph_inputs = [i.name for i in model.graph.input if i.name not in self.tensors]
        if graph_inputs != [contract.input_name]:
            raise OnboardError(f"policy.onnx has inputs {graph_inputs}; the C export takes one, {contract.input_name!r}")
        outputs = [o.name for o in model.graph.output]
        if outputs != [contract.output_name]:
            raise OnboardError(f"policy.onnx has outputs {outputs}; the C export writes one, {contract.output_name!r}")
        self.tensors[contract.input_name] = _Tensor(contract.obs_dim, expr="obs")

    # -------------------------------------------------------------- helpers

    def _const_array(self, hint: str, value: np.ndarray, shape: tuple[int, ...] | None = None) -> str:
        name = f"{_ident(hint)}_{len(self.consts)}"
        shape = shape or (value.size,)
        dims = "".join(f"[{d}]" for d in shape)
        self.consts.append(f"/* {hint} {list(value.shape)} */\nstatic const float {name}{dims} = {_array(value)};")
        return name

    def _buffer(self, length: int) -> str:
        self._n += 1
        name = f"t{self._n}"
        self.body.append(f"    float {name}[{length}];")
        return name

    def _operand(self, name: str, hint: str) -> tuple[_Tensor, str]:
        """(tensor, C expression of element i); a constant becomes a const array (or a literal scalar)."""
        if name not in self.tensors:
            raise OnboardError(f"policy.onnx: tensor {name!r} is used before it is computed")
        t = self.tensors[name]
        if t.value is None:
            return t, f"{t.expr}[i]"
        if t.value.size == 1:
            return _Tensor(1, value=t.value), _f(t.value.reshape(-1)[0])
        if not t.expr:
            t.expr = self._const_array(hint, t.value)
        return _Tensor(t.value.size, expr=t.expr, value=t.value), f"{t.expr}[i]"

    def _runtime(self, node, idx: int = 0) -> _Tensor:
        t = self.tensors.get(node.input[idx])
        if t is None or t.value is not None:
            raise OnboardError(f"policy.onnx: {node.op_type} {node.name!r} input {node.input[idx]!r} must be "
                               "computed from the observation")
        return t

    def _scalar_input(self, node, idx: int, default: float) -> float:
        if len(node.input) <= idx or not node.input[idx]:
            return default
        t = self.tensors.get(node.input[idx])
        if t is None or t.value is None or t.value.size != 1:
            raise OnboardError(f"policy.onnx: {node.op_type} {node.name!r} bound {node.input[idx]!r} must be a "
                               "constant scalar")
        return float(t.value.reshape(-1)[0])

    def _attrs(self, node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def _unary(self, node, expr_of) -> None:
        x = self._runtime(node)
        out = self._buffer(x.length)
        self.body.append(f"    for (i = 0; i < {x.length}; ++i) {out}[i] = {expr_of(f'{x.expr}[i]')};")
        self.tensors[node.output[0]] = _Tensor(x.length, expr=out)

    # -------------------------------------------------------------- ops

    def run(self) -> None:
        for node in self.model.graph.node:
            if node.op_type not in SUPPORTED_OPS:
                raise OnboardError(f"policy.onnx has a {node.op_type} node ({node.name!r}) that the C export does "
                                   f"not translate; it translates MLP graphs of {', '.join(SUPPORTED_OPS)}")
            getattr(self, f"_op_{node.op_type.lower()}")(node)
        out = self.tensors.get(self.contract.output_name)
        if out is None or out.value is not None or out.length != self.contract.action.dim:
            raise OnboardError(f"policy.onnx: output {self.contract.output_name!r} is not a computed vector of "
                               f"action.dim {self.contract.action.dim}")
        self.output = out

    def _op_constant(self, node) -> None:
        attrs = self._attrs(node)
        if "value" not in attrs:
            raise OnboardError(f"policy.onnx: Constant {node.name!r} has no tensor 'value'")
        self.tensors[node.output[0]] = _Tensor(0, value=self.numpy_helper.to_array(attrs["value"]).astype(np.float32))

    def _op_identity(self, node) -> None:
        self.tensors[node.output[0]] = self.tensors[node.input[0]]

    def _binary(self, node, sym: str) -> None:
        ta, a = self._operand(node.input[0], node.input[0])
        tb, b = self._operand(node.input[1], node.input[1])
        if ta.value is not None and tb.value is not None and ta.expr == "" and tb.expr == "":
            raise OnboardError(f"policy.onnx: {node.op_type} {node.name!r} of two constants (fold it before export)")
        n = max(ta.length, tb.length)
        for t, name in ((ta, node.input[0]), (tb, node.input[1])):
            if t.length not in (1, n):
                raise OnboardError(f"policy.onnx: {node.op_type} {node.name!r}: {name!r} has {t.length} elements, "
                                   f"the other operand {n}")
        out = self._buffer(n)
        self.body.append(f"    for (i = 0; i < {n}; ++i) {out}[i] = {a} {sym} {b};")
        self.tensors[node.output[0]] = _Tensor(n, expr=out)

    def _op_sub(self, node) -> None:
        self._binary(node, "-")

    def _op_add(self, node) -> None:
        self._binary(node, "+")

    def _op_mul(self, node) -> None:
        self._binary(node, "*")

    def _op_div(self, node) -> None:
        self._binary(node, "/")

    def _dense(self, node, x: _Tensor, w_nk: np.ndarray, bias: np.ndarray | None, alpha: float, beta: float) -> None:
        n, k = w_nk.shape
        if k != x.length:
            raise OnboardError(f"policy.onnx: {node.op_type} {node.name!r} takes {k} inputs, gets {x.length}")
        w = self._const_array(node.input[1], w_nk, (n, k))
        out = self._buffer(n)
        acc = "acc" if alpha == 1.0 else f"{_f(alpha)} * acc"
        term = ""
        if bias is not None:
            if bias.size not in (1, n):
                raise OnboardError(f"policy.onnx: {node.op_type} {node.name!r} bias has {bias.size} values for {n} outputs")
            b = _f(bias.reshape(-1)[0]) if bias.size == 1 else f"{self._const_array(node.input[2], bias)}[j]"
            term = f" + {b}" if beta == 1.0 else f" + {_f(beta)} * {b}"
        self.body += [f"    for (j = 0; j < {n}; ++j) {{",
                      "        float acc = 0.0f;",
                      f"        for (i = 0; i < {k}; ++i) acc += {w}[j][i] * {x.expr}[i];",
                      f"        {out}[j] = {acc}{term};",
                      "    }"]
        self.tensors[node.output[0]] = _Tensor(n, expr=out)

    def _weight(self, node, idx: int) -> np.ndarray:
        t = self.tensors.get(node.input[idx])
        if t is None or t.value is None or t.value.ndim != 2:
            raise OnboardError(f"policy.onnx: {node.op_type} {node.name!r} weight {node.input[idx]!r} must be a "
                               "constant matrix")
        return t.value

    def _op_gemm(self, node) -> None:
        attrs = self._attrs(node)
        if attrs.get("transA", 0):
            raise OnboardError(f"policy.onnx: Gemm {node.name!r} with transA is not an MLP layer")
        w = self._weight(node, 1)
        w_nk = w if attrs.get("transB", 0) else w.T
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = self.tensors[node.input[2]].value
            if bias is None:
                raise OnboardError(f"policy.onnx: Gemm {node.name!r} bias must be constant")
        self._dense(node, self._runtime(node), np.ascontiguousarray(w_nk), bias,
                    float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0)))

    def _op_matmul(self, node) -> None:
        self._dense(node, self._runtime(node), np.ascontiguousarray(self._weight(node, 1).T), None, 1.0, 1.0)

    def _op_elu(self, node) -> None:
        alpha = float(self._attrs(node).get("alpha", 1.0))
        self.libm.add("expf")
        scale = "" if alpha == 1.0 else f"{_f(alpha)} * "
        self._unary(node, lambda x: f"{x} >= 0.0f ? {x} : {scale}(expf({x}) - 1.0f)")

    def _op_tanh(self, node) -> None:
        self.libm.add("tanhf")
        self._unary(node, lambda x: f"tanhf({x})")

    def _op_relu(self, node) -> None:
        self._unary(node, lambda x: f"{x} > 0.0f ? {x} : 0.0f")

    def _op_clip(self, node) -> None:
        attrs = self._attrs(node)
        lo = self._scalar_input(node, 1, float(attrs.get("min", -np.inf)))
        hi = self._scalar_input(node, 2, float(attrs.get("max", np.inf)))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise OnboardError(f"policy.onnx: Clip {node.name!r} needs finite bounds, got [{lo}, {hi}]")
        self._unary(node, lambda x: f"{x} < {_f(lo)} ? {_f(lo)} : ({x} > {_f(hi)} ? {_f(hi)} : {x})")


# ------------------------------------------------------------------------------------------ files


def _macro(prefix: str, name: str) -> str:
    return f"{prefix.upper()}_{_ident(name).upper()}"


def _header(contract: PolicyContract, prefix: str, sha: str, libm: set[str]) -> str:
    m = lambda name: _macro(prefix, name)  # noqa: E731
    a = contract.action
    guard = m("H")
    lines = [
        f"/* {prefix}.h: the contract facts of an exported Tether policy, for firmware.",
        f" * Generated by policies/export_c.py from policy.onnx (sha256 {sha}); do not edit, re-export.",
        f" * Task {contract.task}, contract {contract.version}, config hash {contract.provenance.get('config_hash')},",
        f" * source revision {contract.provenance.get('source_revision', 'unknown')}.",
        " * Conventions: SI units; body axes FLU, world axes ENU; quaternions wxyz, body -> world. */",
        f"#ifndef {guard}", f"#define {guard}", "",
        f'#define {m("CONTRACT_VERSION")} "{contract.version}"',
        f'#define {m("ONNX_SHA256")} "{sha}"',
        f'#define {m("TASK")} "{contract.task}"',
        f"#define {m('CONTROL_RATE_HZ')} {_f(contract.control_rate_hz)}  /* call step once per control tick [Hz] */",
        f"#define {m('CONTROL_DT_S')} {_f(1.0 / contract.control_rate_hz)}  /* one control period [s] */",
        f"#define {m('ACTION_LATENCY_S')} {_f(contract.action_latency_s)}  /* mean action delay trained with [s] */",
        "",
        f"/* Observation: {contract.obs_dim} floats, these named slices back to back (the contract's vocabulary);",
        " * each is multiplied by its scale before the call. The normalizer is inside step. */",
        f"#define {m('OBS_DIM')} {contract.obs_dim}",
    ]
    for s in contract.observation:
        doc = VOCABULARY[s.name].doc
        lines += [f"#define {m('OBS_' + s.name + '_OFFSET')} {s.offset}",
                  f"#define {m('OBS_' + s.name + '_LEN')} {s.length}  /* {s.name} [{s.unit}, {s.frame}]"
                  f"{'' if s.scale == 1.0 else f', scale {s.scale:g}'}: {doc} */"]
    if any(s.name == "prev_actions" for s in contract.observation):
        lines.append(f"#define {m('PREV_ACTION_STEPS')} {contract.slice('prev_actions').length // a.dim}"
                     "  /* actions in prev_actions, oldest first */")
    initial = "hover" if contract.frames is None else contract.frames.initial_action_history
    lines += [
        "",
        f"/* Action: {a.dim} normalized outputs in [low, high] (step clips), meaning per tether/actions.py: */",
        f'#define {m("ACTION_TYPE")} "{a.type}"',
        f"#define {m('ACTION_TYPE_' + a.type)} 1",
        f"#define {m('ACTION_DIM')} {a.dim}",
        f"#define {m('ACTION_LOW')} {_f(a.low)}",
        f"#define {m('ACTION_HIGH')} {_f(a.high)}",
    ]
    if a.type == "ctbr":
        lim = a.body_rate_limits_rad_s
        lines += [
            "/* ctbr: thrust [N] = (a[0] + 1) / 2 * MAX_THRUST_N; body rate about x_b, y_b, z_b [rad/s] = a[1..3] *",
            " * BODY_RATE_LIMIT_*; tracked by a rate loop (gains RATE_KP_*) that the firmware runs. */",
            f"#define {m('MAX_THRUST_N')} {_f(a.max_thrust_n)}  /* collective thrust at a[0] = high [N] */",
            *[f"#define {m('BODY_RATE_LIMIT_' + ax + '_RAD_S')} {_f(v)}  /* body rate at a[{i + 1}] = 1 [rad/s] */"
              for i, (ax, v) in enumerate(zip("XYZ", lim))],
        ]
        kp = contract.controller.rate_kp if contract.controller is not None else a.rate_kp
        if any(kp):
            lines += [f"#define {m('RATE_KP_' + ax)} {_f(v)}  /* rate-error gain trained with [1/s] */"
                      for ax, v in zip("XYZ", kp)]
        lines.append(f"void {prefix}_to_ctbr(const float *action, float *thrust_n, float *body_rates_b_rad_s);")
    else:
        lines += [
            "/* rotor: output i -> fraction of the vehicle's own max rotor speed (a + 1) / 2 in [0, 1]; on the",
            " * trained vehicle rpm = fraction * MAX_RPM, thrust [N] = KF * rpm^2. Rotor order and spin below. */",
            f"#define {m('MAX_RPM')} {_f(a.max_rpm)}  /* trained vehicle's rotor speed at full command [rpm] */",
            f"#define {m('KF_N_PER_RPM2')} {_f(a.kf_n_per_rpm2)}  /* thrust coefficient [N/rpm^2] */",
            f"#define {m('KM_NM_PER_RPM2')} {_f(a.km_nm_per_rpm2)}  /* reaction torque coefficient [N m/rpm^2] */",
            f"extern const float {prefix}_rotor_pos_b_m[{a.dim}][3];  /* hub positions, body frame [m] */",
            f"extern const int {prefix}_rotor_spin[{a.dim}];  /* +1 counter-clockwise seen from above */",
            f"void {prefix}_to_rotor_fraction(const float *action, float *fraction);",
        ]
    if a.hover_action:
        lines.append(f"extern const float {prefix}_hover_action[{a.dim}];  /* hovers the nominal vehicle */")
    lines += [
        f"/* before the first tick every prev_actions slot holds: {initial} */",
        "",
        f"#define {m('OK')} 0",
        f"#define {m('ERR_NONFINITE_OBS')} ({ERR_NONFINITE_OBS})  /* an observation is NaN or Inf */",
        f"#define {m('ERR_NONFINITE_ACTION')} ({ERR_NONFINITE_ACTION})  /* the network produced NaN or Inf */",
        f"/* obs[{m('OBS_DIM')}] -> action[{m('ACTION_DIM')}], clipped to [low, high]. Returns {m('OK')}, or an",
        " * error and leaves action untouched: the firmware then goes to its safe behaviour. Reentrant: no",
        f" * heap, no writable globals; libm: {', '.join(sorted(libm)) or 'none'}. */",
        f"int {prefix}_step(const float *obs, float *action);",
        "", f"#endif /* {guard} */", "",
    ]
    return "\n".join(lines)


def _source(tr: _Translator, contract: PolicyContract, prefix: str, sha: str) -> str:
    a = contract.action
    o = contract.obs_dim
    lines = [f"/* {prefix}.c: generated by policies/export_c.py from policy.onnx (sha256 {sha}); do not edit. */",
             f'#include "{prefix}.h"', "",
             f"/* The graph's order: observation normalizer {contract.normalization.get('formula', '(folded)')} "
             "(Sub, Div), the layers, the action bias, the clip. */"]
    lines += ["#include <math.h>  /* isfinite (a macro) and the activations' functions */", ""]
    lines += [c + "\n" for c in tr.consts]
    if a.hover_action:
        lines.append(f"const float {prefix}_hover_action[{a.dim}] = {_array(np.asarray(a.hover_action))};\n")
    if a.type == "rotor":
        lines.append(f"const float {prefix}_rotor_pos_b_m[{a.dim}][3] = "
                     f"{_array(np.asarray([r.pos_b for r in a.rotors]), per_line=3)};\n")
        lines.append(f"const int {prefix}_rotor_spin[{a.dim}] = {{{', '.join(str(r.spin) for r in a.rotors)}}};\n")
    m = lambda name: _macro(prefix, name)  # noqa: E731
    # the buffers are declared first, so the input check can come before any layer
    declarations = [s for s in tr.body if s.startswith("    float t")]
    statements = [s for s in tr.body if not s.startswith("    float t")]
    lines += [f"int {prefix}_step(const float *obs, float *action)", "{", "    int i, j;", *declarations,
              f"    for (i = 0; i < {o}; ++i)",
              f"        if (!isfinite(obs[i])) return {m('ERR_NONFINITE_OBS')};",
              *statements,
              f"    for (i = 0; i < {a.dim}; ++i)",
              f"        if (!isfinite({tr.output.expr}[i])) return {m('ERR_NONFINITE_ACTION')};",
              f"    for (i = 0; i < {a.dim}; ++i) action[i] = {tr.output.expr}[i];",
              "    (void)j;",
              f"    return {m('OK')};", "}", ""]
    if a.type == "ctbr":
        lines += [f"void {prefix}_to_ctbr(const float *action, float *thrust_n, float *body_rates_b_rad_s)", "{",
                  f"    *thrust_n = (action[0] + 1.0f) / 2.0f * {m('MAX_THRUST_N')};",
                  f"    body_rates_b_rad_s[0] = action[1] * {m('BODY_RATE_LIMIT_X_RAD_S')};",
                  f"    body_rates_b_rad_s[1] = action[2] * {m('BODY_RATE_LIMIT_Y_RAD_S')};",
                  f"    body_rates_b_rad_s[2] = action[3] * {m('BODY_RATE_LIMIT_Z_RAD_S')};", "}", ""]
    else:
        lines += [f"void {prefix}_to_rotor_fraction(const float *action, float *fraction)", "{", "    int i;",
                  f"    for (i = 0; i < {a.dim}; ++i) {{",
                  "        float f = (action[i] + 1.0f) / 2.0f;",
                  "        fraction[i] = f < 0.0f ? 0.0f : (f > 1.0f ? 1.0f : f);", "    }", "}", ""]
    return "\n".join(lines)


def refuse_images(contract: PolicyContract) -> None:
    """UserError for a policy with image inputs: the C export translates state-vector MLPs only."""
    if contract.images:
        raise UserError(f"the onboard C export takes a state-vector MLP policy; this one also takes image input(s) "
                        f"{[im.name for im in contract.images]} (contract {contract.version}); deploy it with the "
                        f"ROS 2 runner (onnxruntime) instead of --onboard c")


def translate(onnx_path: str | Path, contract: PolicyContract, name: str = DEFAULT_NAME) -> tuple[str, str]:
    """(C source, header) of the policy in ``onnx_path`` with the facts of ``contract``."""
    import onnx

    refuse_images(contract)

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise OnboardError(f"name {name!r} is not a C identifier (it prefixes every symbol and names the files)")
    sha = sha256_file(onnx_path)
    if sha != contract.provenance["onnx_sha256"]:
        raise ContractError(f"{onnx_path}: sha256 does not match the contract's onnx_sha256")
    tr = _Translator(onnx.load(str(onnx_path)), contract, name)
    tr.run()
    return _source(tr, contract, name, sha), _header(contract, name, sha, tr.libm)


# ---------------------------------------------------------------------------------- build + verify


def find_compiler() -> str | None:
    """The first C compiler on PATH ($CC first), or None."""
    for cand in ([os.environ["CC"]] if os.environ.get("CC") else []) + list(COMPILERS):
        path = shutil.which(cand)
        if path:
            return path
    return None


def compile_shared(c_path: Path, lib_path: Path, compiler: str | None = None, extra: tuple[str, ...] = ()) -> Path:
    """Build ``c_path`` into a shared library (strict C99, warnings are errors); OnboardError with the
    compiler's message on failure."""
    compiler = compiler or find_compiler()
    if compiler is None:
        raise OnboardError(f"no C compiler on PATH (tried $CC, {', '.join(COMPILERS)}); install one (apt install gcc)")
    cmd = [compiler, *C_FLAGS, *extra, "-shared", "-fPIC", "-o", str(lib_path), str(c_path), "-lm"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise OnboardError(f"{' '.join(cmd)} failed: {res.stderr.strip()[:2000]}")
    return lib_path


class CPolicy:
    """The compiled ``<name>_step`` called through ctypes, one observation at a time (as firmware does)."""

    def __init__(self, lib_path: Path, name: str, obs_dim: int, action_dim: int):
        self.lib = ctypes.CDLL(str(lib_path))
        self.step = getattr(self.lib, f"{name}_step")
        self.step.restype = ctypes.c_int
        self.step.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float)]
        self.obs_dim, self.action_dim = obs_dim, action_dim

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """obs [B, obs_dim] -> actions [B, action_dim]; OnboardError on a non-zero status."""
        obs = np.ascontiguousarray(np.atleast_2d(obs), dtype=np.float32)
        out = np.zeros((obs.shape[0], self.action_dim), dtype=np.float32)
        f_p = ctypes.POINTER(ctypes.c_float)
        for b in range(obs.shape[0]):
            status = self.step(obs[b].ctypes.data_as(f_p), out[b].ctypes.data_as(f_p))
            if status != 0:
                raise OnboardError(f"{self.step.__name__} returned {status} on observation {b}")
        return out


def random_observations(contract: PolicyContract, n: int, seed: int = 0) -> np.ndarray:
    """[n, obs_dim] uniform in mean +- 3 std of the contract's recorded normalizer (the range training saw),
    each slice's prev_actions within the action bounds; N(0, 2^2) where no statistics are recorded."""
    rng = np.random.default_rng(seed)
    norm = contract.normalization
    if "mean" in norm and "std" in norm and len(norm["mean"]) == contract.obs_dim:
        mean, std = np.asarray(norm["mean"]), np.asarray(norm["std"])
        obs = mean + rng.uniform(-3.0, 3.0, size=(n, contract.obs_dim)) * np.maximum(std, 1e-3)
    else:
        obs = rng.normal(size=(n, contract.obs_dim)) * 2.0
    if any(s.name == "prev_actions" for s in contract.observation):
        s = contract.slice("prev_actions")
        obs[:, s.offset:s.offset + s.length] = rng.uniform(contract.action.low, contract.action.high, (n, s.length))
    return obs.astype(np.float32)


def flight_observations(policy_dir: str | Path, duration_s: float = 2.0, num_drones: int = 4,
                        seed: int = 0) -> np.ndarray:
    """[T * M, obs_dim] the observations a short pybullet flight under the policy (onnxruntime) built through
    tether.observation.build_observation, from tilted, moving starts around the goal at the origin."""
    from sim.pybullet_ref.evaluate import fly
    from sim.quadrotor.presets import PRESETS
    from tether.runtime import OnnxPolicy

    policy = OnnxPolicy(policy_dir)
    preset_name = policy.contract.provenance.get("preset") or (policy.contract.vehicle.name
                                                               if policy.contract.vehicle else None)
    if preset_name not in PRESETS:
        raise ContractError(f"{policy_dir}: vehicle {preset_name!r} is not a preset ({sorted(PRESETS)}); "
                            "pass recorded observations instead")
    rng = np.random.default_rng(seed)
    m = num_drones
    axis = rng.normal(size=(m, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    half = rng.uniform(0.0, np.radians(20.0), size=(m, 1)) / 2.0
    init = {"pos_w": rng.uniform(-0.3, 0.3, (m, 3)) + [0.0, 0.0, 1.0],
            "quat_wxyz": np.concatenate([np.cos(half), axis * np.sin(half)], 1),
            "lin_vel_w": rng.uniform(-0.3, 0.3, (m, 3)), "ang_vel_b": rng.uniform(-0.3, 0.3, (m, 3))}
    seen: list[np.ndarray] = []

    def recording(obs: np.ndarray) -> np.ndarray:
        seen.append(np.array(obs, dtype=np.float32))
        return policy(obs)

    fly(recording, policy.contract, PRESETS[preset_name], init, np.array([0.0, 0.0, 1.0]), duration_s)
    return np.concatenate(seen)


def verify(c_path: Path, policy_dir: str | Path, obs: np.ndarray, name: str = DEFAULT_NAME,
           compiler: str | None = None) -> tuple[float, str]:
    """Compile ``c_path`` and compare it with onnxruntime on ``obs``; (max abs error, compiler). Raises
    OnboardMismatch above TOLERANCE."""
    from tether.runtime import OnnxPolicy

    policy = OnnxPolicy(policy_dir)
    compiler = compiler or find_compiler()
    with tempfile.TemporaryDirectory() as tmp:
        lib = compile_shared(Path(c_path), Path(tmp) / f"lib{name}.so", compiler, extra=(f"-I{Path(c_path).parent}",))
        c_policy = CPolicy(lib, name, policy.contract.obs_dim, policy.contract.action.dim)
        got = c_policy(obs)
    want = policy(obs)
    err = float(np.abs(got - want).max())
    if not err <= TOLERANCE:
        worst = int(np.abs(got - want).max(axis=1).argmax())
        raise OnboardMismatch(f"{c_path}: the C policy differs from onnxruntime by {err:.3g} > {TOLERANCE:g} "
                              f"(observation {worst}: C {got[worst].tolist()}, onnxruntime {want[worst].tolist()})")
    return err, str(compiler)


def export_c(policy_dir: str | Path, out_dir: str | Path, name: str = DEFAULT_NAME, force: bool = False,
             verify_outputs: bool = True, recorded_obs: np.ndarray | None = None, n_random: int = 1024) -> OnboardExport:
    """Write ``<name>.c`` + ``<name>.h`` into ``out_dir`` from the policy in ``policy_dir`` and verify them
    (random observations + a short pybullet flight, or ``recorded_obs``) against onnxruntime. A policy
    with image inputs is refused (UserError): only state-vector MLPs translate.

    Refuses (FileExistsError) to replace existing files without ``force``. The files are written under a
    temporary name, verified, then renamed: a failed check leaves nothing that firmware could include."""
    onnx_path, contract = load_policy_dir(policy_dir)
    refuse_images(contract)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a folder for {name}.c + {name}.h")
    c_path, h_path = out_dir / f"{name}.c", out_dir / f"{name}.h"
    existing = [p.name for p in (c_path, h_path) if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; pass force to replace them")
    source, header = translate(onnx_path, contract, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".onboard-") as tmp:
        tmp_c, tmp_h = Path(tmp) / c_path.name, Path(tmp) / h_path.name
        tmp_c.write_text(source)
        tmp_h.write_text(header)
        err, compiler, n = float("nan"), "", 0
        if verify_outputs:
            obs = random_observations(contract, n_random)
            flight = recorded_obs if recorded_obs is not None else flight_observations(policy_dir)
            obs = np.concatenate([obs, np.asarray(flight, dtype=np.float32)])
            err, compiler = verify(tmp_c, policy_dir, obs, name)
            n = len(obs)
        os.replace(tmp_h, h_path)
        os.replace(tmp_c, c_path)
    return OnboardExport(c_path, h_path, err, n, compiler)
