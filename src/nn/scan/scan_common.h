// Helpers shared by the scan-family layers (Mamba, HGRN, TTT-Linear).
#pragma once

#include <string>

#include "autograd/variable.h"
#include "kernels/scan/scan_form.h"

namespace sw::nn::scan_detail {

// A non-GEMM parameter (conv taps, A_log, inner-norm weights) as f32. Module::to_bf16_weights()
// converts every 2-d parameter to bf16 for inference, but only the GEMM path reads bf16; the scan,
// conv and norm kernels read f32, so a converted parameter is widened back (it is frozen then, so
// nothing is lost by detaching it).
inline Variable f32_param(const Variable& p) {
  if (p.data().dtype() == DType::f32) return p;
  return Variable(p.data().to(DType::f32));
}

// "sequential" | "blelloch" (kernels/scan/scan_form.h); `layer` names the layer in the error.
inline kernels::scan::ScanForm parse_scan_form(const std::string& s, const char* layer) {
  if (s == "sequential") return kernels::scan::ScanForm::sequential;
  SW_CHECK(s == "blelloch", layer, "scan_form must be 'sequential' or 'blelloch', got '", s, "'");
  return kernels::scan::ScanForm::blelloch;
}

}  // namespace sw::nn::scan_detail
