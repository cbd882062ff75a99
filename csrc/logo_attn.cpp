// The op schemas of the logo_attn_C library and the `logo_attn._C` Python module that loads them
// (the pytorch/extension-cpp layout). Implementations are registered per device in cpu/ops.cpp and
// cuda/ops.cpp; fake tensors and autograd are registered from Python (logo_attn/ops.py).
#include <Python.h>
#include <torch/library.h>

#include "capabilities.h"
#include "cpu/half_gemm.h"
#include "cpu/kernels.h"

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

}  // namespace

extern "C" {
// Importing logo_attn._C loads this library, whose static initialisers register the ops below.
// The module itself reports which instruction set the CPU kernels chose and what the kernels compute.
static PyObject* cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(logo_attn::cpu::cpu_isa_name()); }

// The facts behind each dtype's instruction path (logo_attn.info words them).
static PyObject* cpu_features(PyObject*, PyObject*) {
  const char *bf16_gemm, *fp16_gemm;
  try {  // a bad LOGO_ATTN_CPU_HALF_GEMM is the caller's error, not a crash
    bf16_gemm = logo_attn::cpu::half_gemm_name(at::kBFloat16);
    fp16_gemm = logo_attn::cpu::half_gemm_name(at::kHalf);
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    return nullptr;
  }
  PyObject* result = PyDict_New();
  if (!result) return nullptr;
  const bool ok = set_item(result, "isa", PyUnicode_FromString(logo_attn::cpu::cpu_isa_name())) &&
                  set_item(result, "avx512_bf16", PyBool_FromLong(logo_attn::cpu::cpu_has_avx512_bf16())) &&
                  set_item(result, "amx_bf16", PyBool_FromLong(logo_attn::cpu::brgemm_could_pack(at::kBFloat16))) &&
                  set_item(result, "amx_fp16", PyBool_FromLong(logo_attn::cpu::brgemm_could_pack(at::kHalf))) &&
                  set_item(result, "bf16_gemm", PyUnicode_FromString(bf16_gemm)) &&
                  set_item(result, "fp16_gemm", PyUnicode_FromString(fp16_gemm));
  if (ok) return result;
  Py_DECREF(result);
  return nullptr;
}

// For benchmarks and tests: which product bf16/fp16 local attention's next calls run on.
static PyObject* set_cpu_half_gemm(PyObject*, PyObject* arg) {
  const char* mode = PyUnicode_AsUTF8(arg);
  if (!mode) return nullptr;
  try {
    return PyUnicode_FromString(logo_attn::cpu::set_half_gemm_mode(mode));
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    return nullptr;
  }
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
       "'amx_fp16': bool (PyTorch's brgemm could_pack for that dtype), 'bf16_gemm' / 'fp16_gemm': the product "
       "bf16/fp16 local attention runs on ('amx', 'none': the fp32 tiles, or a test mode: 'brgemm', 'emulated')}."},
      {"set_cpu_half_gemm", set_cpu_half_gemm, METH_O,
       "set_cpu_half_gemm(mode) -> previous mode: the product of bf16/fp16 local attention's next CPU calls, as "
       "LOGO_ATTN_CPU_HALF_GEMM sets it at start ('auto': AMX where PyTorch's brgemm packs the dtype, else the fp32 "
       "tiles; 'off': the fp32 tiles; 'brgemm', 'emulated': test modes). For benchmarks and tests."},
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
