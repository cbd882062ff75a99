// The op schemas of the logo_attn_C library and the `logo_attn._C` Python module that loads them
// (the pytorch/extension-cpp layout). Implementations are registered per device in cpu/ops.cpp and
// cuda/ops.cpp; fake tensors and autograd are registered from Python (logo_attn/ops.py).
#include <Python.h>
#include <torch/library.h>

#include "cpu/kernels.h"

extern "C" {
// Importing logo_attn._C loads this library, whose static initialisers register the ops below.
// The module itself only reports which instruction set the CPU kernels chose.
static PyObject* cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(logo_attn::cpu::cpu_isa_name()); }

PyObject* PyInit__C(void) {
  static PyMethodDef methods[] = {
      {"cpu_isa", cpu_isa, METH_NOARGS, "Instruction set of the CPU kernels: 'avx512', 'avx2' or 'baseline'."},
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
