#include "autograd/gradcheck.h"

#include <cmath>
#include <random>
#include <sstream>

namespace sw {

GradCheckResult grad_check(const OpFn& op, const RefFn& ref, const std::vector<Tensor>& inputs,
                           const GradCheckOptions& opts) {
  GradCheckResult res;
  std::vector<Variable> vars;
  std::vector<std::vector<double>> ref_inputs;
  std::vector<bool> wrt(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    bool floating = inputs[i].dtype() == DType::f32;
    wrt[i] = floating && (opts.wrt.empty() || (i < opts.wrt.size() && opts.wrt[i]));
    vars.emplace_back(inputs[i].clone(), wrt[i]);
    ref_inputs.push_back(inputs[i].to_doubles());
  }
  Variable out = op(vars);
  std::mt19937_64 rng(opts.seed);
  std::uniform_real_distribution<double> dist(-1, 1);
  std::vector<double> r(out.numel());
  for (double& v : r) v = dist(rng);
  std::vector<float> rf(r.begin(), r.end());
  out.backward(Tensor::from_vector(rf, out.shape()));
  auto loss = [&](const std::vector<std::vector<double>>& xs) {
    std::vector<double> y = ref(xs);
    SW_CHECK(y.size() == r.size(), "grad_check", "reference returned ", y.size(), " values, op ", r.size());
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * static_cast<double>(rf[i]);
    return s;
  };
  std::ostringstream rep;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!wrt[i]) continue;
    const Tensor& g = vars[i].grad();
    std::vector<double> analytic = g.defined() ? g.to_doubles() : std::vector<double>(inputs[i].numel(), 0.0);
    for (size_t j = 0; j < ref_inputs[i].size(); ++j) {
      double keep = ref_inputs[i][j];
      ref_inputs[i][j] = keep + opts.eps;
      double lp = loss(ref_inputs);
      ref_inputs[i][j] = keep - opts.eps;
      double lm = loss(ref_inputs);
      ref_inputs[i][j] = keep;
      double numeric = (lp - lm) / (2 * opts.eps);
      double err = std::fabs(analytic[j] - numeric);
      double tol = opts.atol + opts.rtol * std::fabs(numeric);
      if (!(err <= tol)) {
        if (res.ok) rep << "input " << i << " element " << j << ": analytic " << analytic[j] << " numeric " << numeric;
        res.ok = false;
      }
      if (!(err <= res.max_abs_err)) res.max_abs_err = err;
    }
  }
  res.report = rep.str();
  return res;
}

}  // namespace sw
