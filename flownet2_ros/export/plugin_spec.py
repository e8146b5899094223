"""Identity of the FlowNet correlation custom op, shared by the ONNX exporter, the ONNX Runtime custom op
and the TensorRT plugin.

The exported node is ``<PLUGIN_DOMAIN>::<PLUGIN_NAME>`` with inputs (input1, input2), one output, INT
attributes pad_size, kernel_size, max_displacement, stride1, stride2, a FLOAT attribute corr_multiply and
the STRING attributes ``plugin_version`` / ``plugin_namespace``, which TensorRT's ONNX parser uses to pick
the plugin creator (it matches the node's op_type against the plugin name and ignores the node domain).

Domain: ``ai.onnx.contrib`` serves both runtimes unchanged: it is the only domain onnxruntime-extensions
registers its Python custom ops in, and TensorRT's parser dispatches on op_type alone (the domain is only
recorded from ``opset_import``).

Types: inputs and output share one dtype, float32 or float16 (the fp16 export feeds float16 unless told
otherwise); an implementation should accumulate in float32. Output shape
(B, (2d+1)², H', W'), d = max_displacement // stride2 (see ``flownet2_ros.ops.correlation_output_size``).
"""

from __future__ import annotations

PLUGIN_NAME = "FlowNet2Correlation"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "flownet2_ros"
PLUGIN_DOMAIN = "ai.onnx.contrib"
"""ONNX node domain of the custom node (also declared in the model's opset_import, version 1)."""
PLUGIN_DOMAIN_VERSION = 1

CORRELATION_ATTRIBUTES = (
    "pad_size",
    "kernel_size",
    "max_displacement",
    "stride1",
    "stride2",
    "corr_multiply",
)
"""Plugin fields, in this order: five INT (INT32 in TensorRT) and corr_multiply FLOAT (FLOAT32)."""
CORRELATION_INT_ATTRIBUTES = CORRELATION_ATTRIBUTES[:5]
CORRELATION_FLOAT_ATTRIBUTES = CORRELATION_ATTRIBUTES[5:]

__all__ = [
    "CORRELATION_ATTRIBUTES",
    "CORRELATION_FLOAT_ATTRIBUTES",
    "CORRELATION_INT_ATTRIBUTES",
    "PLUGIN_DOMAIN",
    "PLUGIN_DOMAIN_VERSION",
    "PLUGIN_NAME",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
]
