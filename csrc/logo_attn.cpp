// The op schemas of the logo_attn_C library and the `logo_attn._C` Python module that loads them
// (the pytorch/extension-cpp layout). Implementations are registered per device in cpu/ops.cpp and
// cuda/ops.cpp; fake tensors and autograd are registered from Python (logo_attn/ops.py).
#include <Python.h>
#include <torch/library.h>

#include "capabilities.h"
#include "cpu/kernels.h"

// PyTorch's oneDNN micro-kernel interface (exported from libtorch_cpu since 2.5): could_pack says
// whether its brgemm runs bf16/fp16 on AMX here. Asked only, for cpu_features(); a torch without
// the header or the brgemm macros reports no AMX. Older headers include oneDNN's ukernel header
// when built with oneDNN: only where that header ships too.
#include <ATen/Config.h>
#if __has_include(<ATen/native/CPUBlas.h>) && (!AT_MKLDNN_ENABLED() || __has_include(<oneapi/dnnl/dnnl_ukernel.hpp>))
#include <ATen/native/CPUBlas.h>
#endif

namespace {

// torch's name of a dtype (torch.float32 is "float32").
const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    default: return c10::toString(t);
  }
}

// Sets dict[key] = value, consuming the reference to value (which may be null: a failed
// allocation); false, with the Python error set, on failure.
bool set_item(PyObject* dict, const char* key, PyObject* value) {
  const bool ok = value && PyDict_SetItemString(dict, key, value) == 0;
  Py_XDECREF(value);
  return ok;
}

PyObject* capability_dict(const logo_attn::Capability& c) {
  PyObject* dtypes = PyList_New(0);
  if (!dtypes) return nullptr;
  for (at::ScalarType t : c.dtypes) {
    PyObject* name = PyUnicode_FromString(dtype_name(t));
    const bool appended = name && PyList_Append(dtypes, name) == 0;
    Py_XDECREF(name);
    if (!appended) {
      Py_DECREF(dtypes);
      return nullptr;
    }
  }
  PyObject* dict = PyDict_New();
  if (!dict) {
    Py_DECREF(dtypes);
    return nullptr;
  }
  if (set_item(dict, "dtypes", dtypes) && set_item(dict, "max_head_dim", PyLong_FromLongLong(c.max_head_dim)))
    return dict;
  Py_DECREF(dict);
  return nullptr;
}

// could_pack(dtype) where this torch has the brgemm interface, else false.
bool brgemm_could_pack(at::ScalarType t) {
#ifdef CPUBLAS_BRGEMM_BF16BF16F32
  return at::native::cpublas::could_pack(t);
#else
  (void)t;
  return false;
#endif
}

}  // namespace

extern "C" {
// Importing logo_attn._C loads this library, whose static initialisers register the ops below.
// The module itself reports which instruction set the CPU kernels chose and what the kernels compute.
static PyObject* cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(logo_attn::cpu::cpu_isa_name()); }

// The facts behind each dtype's instruction path (logo_attn.info words them).
static PyObject* cpu_features(PyObject*, PyObject*) {
  PyObject* result = PyDict_New();
  if (!result) return nullptr;
  const bool ok = set_item(result, "isa", PyUnicode_FromString(logo_attn::cpu::cpu_isa_name())) &&
                  set_item(result, "avx512_bf16", PyBool_FromLong(logo_attn::cpu::cpu_has_avx512_bf16())) &&
                  set_item(result, "amx_bf16", PyBool_FromLong(brgemm_could_pack(at::kBFloat16))) &&
                  set_item(result, "amx_fp16", PyBool_FromLong(brgemm_could_pack(at::kHalf)));
  if (ok) return result;
  Py_DECREF(result);
  return nullptr;
}

static PyObject* capabilities(PyObject*, PyObject*) {
  PyObject* result = PyDict_New();
  if (!result) return nullptr;
  for (const auto& [device, capability] : logo_attn::capabilities()) {
    if (!set_item(result, device.c_str(), capability_dict(capability))) {
      Py_DECREF(result);
      return nullptr;
    }
  }
  return result;
}

PyObject* PyInit__C(void) {
  static PyMethodDef methods[] = {
      {"cpu_isa", cpu_isa, METH_NOARGS, "Instruction set of the CPU kernels: 'avx512', 'avx2' or 'baseline'."},
      {"cpu_features", cpu_features, METH_NOARGS,
       "What the CPU offers the kernels: {'isa': cpu_isa(), 'avx512_bf16': bool (the CPU flag), 'amx_bf16' / "
       "'amx_fp16': bool (PyTorch's brgemm could_pack for that dtype)}."},
      {"capabilities", capabilities, METH_NOARGS,
       "What the kernels of this build compute, per device type ('cpu', and 'cuda' when the CUDA kernels were "
       "built): {'dtypes': [torch dtype names], 'max_head_dim': int, 0 meaning no limit}."},
      {nullptr, nullptr, 0, nullptr},
  };
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "logo_attn C++ ops (torch.ops.logo_attn_C)", -1, methods};
  return PyModule_Create(&module);
}
}

TORCH_LIBRARY(logo_attn_C, m) {
  m.def(
      "local_attn_fwd(Tensor q, Tensor k, Tensor v, int[] grid, int[] window, int[] shift, Tensor? bias, "
      "float scale) -> (Tensor, Tensor)");
  // The 4th output is dbias (bias's shape and dtype), or an empty tensor unless bias and bias_grad.
  m.def(
      "local_attn_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, int[] grid, int[] window, "
      "int[] shift, Tensor? bias, float scale, bool bias_grad) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("global_attn_fwd(Tensor q, Tensor k, Tensor v, float scale) -> (Tensor, Tensor)");
  m.def(
      "global_attn_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, float scale) "
      "-> (Tensor, Tensor, Tensor)");
  m.def("window_pool_fwd(Tensor x, int[] grid, int[] window) -> Tensor");
  m.def("window_pool_bwd(Tensor dout, int[] grid, int[] window) -> Tensor");
}
