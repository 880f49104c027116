// Runs every op-table case in check mode (fp32 vs f64 reference) and grad mode (backward vs finite
// differences of the f64 reference). Tolerances are stated per case in bench/op_table.cpp.
#include "bench/op_table.h"
#include "testing.h"

namespace sw::bench {
namespace {

const std::vector<OpCase>& cases() {
  static const std::vector<OpCase> c = op_cases(0);
  return c;
}

class OpTable : public ::testing::TestWithParam<size_t> {};

TEST_P(OpTable, Check) {
  const OpCase& c = cases()[GetParam()];
  CheckResult r = run_check(c);
  EXPECT_TRUE(r.ok) << c.name << ": " << r.report << " (max abs err " << r.max_abs_err << ")";
}

TEST_P(OpTable, Grad) {
  const OpCase& c = cases()[GetParam()];
  if (!c.has_grad) GTEST_SKIP() << c.name << " has no gradient check (see its case)";
  GradCheckResult r = run_grad(c);
  EXPECT_TRUE(r.ok) << c.name << ": " << r.report << " (max abs err " << r.max_abs_err << ")";
}

std::string case_name(const ::testing::TestParamInfo<size_t>& info) {
  std::string n = cases()[info.param].name;
  for (char& ch : n)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(All, OpTable, ::testing::Range<size_t>(0, cases().size()), case_name);

TEST(OpTableCoverage, EveryOpOfIssue2HasACase) {
  std::vector<std::string> required = {"silu", "gelu", "sigmoid", "softplus", "exp", "log", "swiglu", "add", "mul",
                                       "scale", "linear_f32", "linear_bf16w", "matmul", "rmsnorm", "layernorm",
                                       "l2norm", "softmax", "log_softmax", "rope", "rope_partial", "causal_conv1d",
                                       "embedding", "cross_entropy", "sum_rows", "mean_all", "cumsum"};
  for (const std::string& op : required) {
    bool found = false;
    for (const OpCase& c : cases()) found |= c.name.rfind(op + "[", 0) == 0 || c.name.rfind(op + "_", 0) == 0;
    EXPECT_TRUE(found) << "no op-table case for " << op;
  }
}

}  // namespace
}  // namespace sw::bench
