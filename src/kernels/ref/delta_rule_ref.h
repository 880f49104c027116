// f64 references for the delta-rule family: DeltaNet / Gated DeltaNet and RWKV-7 (DPLR).
//
// Written straight from the recurrences (fla.md 2.5, 2.6, 2.8, 2.11), token by token, with every
// per-token state kept so the backward is plain BPTT. This is the spec the fp32 kernels in
// kernels/linear/delta_rule.h and dplr_delta_rule.h must match. Small shapes only (memory
// B*H*(T+1)*K*V doubles).
//
// Layout: activations [B, T, H, D] row-major; state [B, H, K, V] (rows are key channels).
// Optional pointers (nullptr allowed): g, h0, ht, dht, dh0, dg.
#pragma once

namespace sw::kernels::ref {

// Gated delta rule (DeltaNet when g == nullptr), per (b, h):
//   S' = exp(g_t) S_{t-1};  u_t = beta_t (v_t - S'^T k_t);  S_t = S' + k_t u_t^T;  o_t = scale S_t^T q_t
// i.e. S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T.
void delta_rule_fwd(const double* q,     // [B, T, H, K]
                    const double* k,     // [B, T, H, K]
                    const double* v,     // [B, T, H, V]
                    const double* beta,  // [B, T, H]
                    const double* g,     // [B, T, H] log decay, or nullptr (no gate)
                    const double* h0,    // [B, H, K, V] or nullptr (zero)
                    double* o,           // [B, T, H, V]
                    double* ht,          // [B, H, K, V] final state, or nullptr
                    int B, int T, int H, int K, int V, double scale);

// BPTT of delta_rule_fwd for the loss sum(o * do) + sum(ht * dht). Overwrites every non-null grad.
void delta_rule_bwd(const double* q,     // [B, T, H, K]
                    const double* k,     // [B, T, H, K]
                    const double* v,     // [B, T, H, V]
                    const double* beta,  // [B, T, H]
                    const double* g,     // [B, T, H] or nullptr
                    const double* h0,    // [B, H, K, V] or nullptr
                    const double* d_o,   // [B, T, H, V]
                    const double* dht,   // [B, H, K, V] or nullptr (zero)
                    double* dq,          // [B, T, H, K]
                    double* dk,          // [B, T, H, K]
                    double* dv,          // [B, T, H, V]
                    double* dbeta,       // [B, T, H]
                    double* dg,          // [B, T, H] or nullptr
                    double* dh0,         // [B, H, K, V] or nullptr
                    int B, int T, int H, int K, int V, double scale);

// RWKV-7 generalised delta rule (diagonal plus low rank), per (b, h), in our [K, V] state layout:
//   S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T;   o_t = scale S_t^T r_t
// This is the transpose of fla's / RWKV-LM's [V, K] view S_t = S_{t-1} (diag(exp(w_t)) + a_t b_t^T)
// + v_t k_t^T. RWKV-7 layers pass a = -kk, b = kk * alpha and scale = 1.
void dplr_delta_rule_fwd(const double* r,   // [B, T, H, K]
                         const double* w,   // [B, T, H, K] log decay (<= 0)
                         const double* k,   // [B, T, H, K]
                         const double* v,   // [B, T, H, V]
                         const double* a,   // [B, T, H, K]
                         const double* b,   // [B, T, H, K]
                         const double* h0,  // [B, H, K, V] or nullptr
                         double* o,         // [B, T, H, V]
                         double* ht,        // [B, H, K, V] or nullptr
                         int B, int T, int H, int K, int V, double scale);

// BPTT of dplr_delta_rule_fwd for the loss sum(o * do) + sum(ht * dht). Overwrites every non-null grad.
void dplr_delta_rule_bwd(const double* r,    // [B, T, H, K]
                         const double* w,    // [B, T, H, K]
                         const double* k,    // [B, T, H, K]
                         const double* v,    // [B, T, H, V]
                         const double* a,    // [B, T, H, K]
                         const double* b,    // [B, T, H, K]
                         const double* h0,   // [B, H, K, V] or nullptr
                         const double* d_o,  // [B, T, H, V]
                         const double* dht,  // [B, H, K, V] or nullptr
                         double* dr,         // [B, T, H, K]
                         double* dw,         // [B, T, H, K]
                         double* dk,         // [B, T, H, K]
                         double* dv,         // [B, T, H, V]
                         double* da,         // [B, T, H, K]
                         double* db,         // [B, T, H, K]
                         double* dh0,        // [B, H, K, V] or nullptr
                         int B, int T, int H, int K, int V, double scale);

}  // namespace sw::kernels::ref
