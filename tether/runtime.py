"""Run an exported policy in onnxruntime, validated against its contract (no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tether.contract import ContractError, PolicyContract, load_policy_dir


class OnnxPolicy:
    """``policy.onnx`` + ``policy.json`` loaded, verified (hash, names, shapes, version) and ready.

    One intra-op thread by default: on a tiny MLP the default thread pool adds millisecond latency
    spikes, one thread keeps p99 in the tens of microseconds.
    """

    def __init__(self, policy_dir: str | Path, intra_op_threads: int = 1):
        import onnxruntime as ort

        self.onnx_path, self.contract = load_policy_dir(policy_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises several private exception types
            raise ContractError(f"{self.onnx_path}: onnxruntime cannot load it ({e})") from e
        self._check_io(self.contract)

    def _check_io(self, c: PolicyContract) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names_in, names_out = [i.name for i in inputs], [o.name for o in outputs]
        if names_in != list(c.input_names):
            raise ContractError(f"{self.onnx_path}: inputs {names_in}, contract says {list(c.input_names)}")
        if names_out != [c.output_name]:
            raise ContractError(f"{self.onnx_path}: outputs {names_out}, contract says [{c.output_name!r}]")
        in_dim, out_dim = inputs[0].shape[-1], outputs[0].shape[-1]
        if in_dim != c.obs_dim:
            raise ContractError(f"{self.onnx_path}: input width {in_dim}, contract obs_dim {c.obs_dim}")
        if out_dim != c.action.dim:
            raise ContractError(f"{self.onnx_path}: output width {out_dim}, contract action.dim {c.action.dim}")
        for inp, im in zip(inputs[1:], c.images):
            if list(inp.shape[1:]) != list(im.shape):
                raise ContractError(f"{self.onnx_path}: input {im.name!r} is {inp.shape[1:]} after the batch axis, "
                                    f"the contract says {list(im.shape)}")

    def __call__(self, obs: np.ndarray, images: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """obs float32 [obs_dim] or [B, obs_dim] -> actions [action_dim] or [B, action_dim], clipped.

        images: one array per image input of the contract (``contract.images``), by name, each
        [1, H, W] (with obs 1-D) or [B, 1, H, W]: depth in metres as decoded, REP 117 specials allowed
        (the graph handles them; tether.contract.ImageInput)."""
        obs = np.asarray(obs, dtype=np.float32)
        batched = obs.ndim == 2
        feed = {self.contract.input_name: obs if batched else obs[None]}
        if self.contract.images or images:
            given = sorted(images or {})
            if given != sorted(im.name for im in self.contract.images):
                raise ContractError(f"policy takes images {[im.name for im in self.contract.images]}, got {given}")
            for im in self.contract.images:
                x = np.asarray(images[im.name], dtype=np.float32)
                feed[im.name] = x if batched else x[None]
        out = self.session.run(None, feed)[0]
        # np.minimum/np.maximum in place: np.clip's Python wrapper costs more than the whole clip here
        np.maximum(out, self.contract.action.low, out=out)
        np.minimum(out, self.contract.action.high, out=out)
        return out if batched else out[0]
